//! The real binary on a real local network: six `jewel node` processes on 127.0.0.1,
//! driven through the CLI. Readiness is read from each node's stdout (it prints its API
//! address only after writing api.json), never waited for with sleeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

struct Node {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    home: PathBuf,
    peer: String,
    addr: String,
}

impl Node {
    fn spawn(home: &Path, bootstrap: Option<&str>) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(["node", "--home", home.to_str().unwrap()]);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut peer, mut addr) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "node exited before it was ready");
            if let Some(p) = line.strip_prefix("peer id: ") {
                peer = p.trim().to_string();
            } else if let Some(a) = line.strip_prefix("listening on ") {
                addr = a.trim().to_string();
            } else if line.starts_with("api: ") {
                break;
            }
        }
        assert!(home.join("api.json").is_file(), "api.json is written before the node says it is ready");
        Node { child, _stdout: stdout, home: home.to_path_buf(), peer, addr }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jewel(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--home").arg(home).args(args).output().unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = jewel(home, args);
    assert!(o.status.success(), "jewel {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn err_line(home: &Path, args: &[&str]) -> String {
    let o = jewel(home, args);
    assert!(!o.status.success(), "jewel {args:?} should fail");
    let e = String::from_utf8(o.stderr).unwrap();
    assert_eq!(e.trim().lines().count(), 1, "one error line: {e}");
    e
}

#[test]
fn six_peers_put_get_and_survive_what_the_scheme_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::spawn(&tmp.path().join("n0"), None);
    let boot = first.addr.clone();
    let mut nodes = vec![first];
    for i in 1..6 {
        nodes.push(Node::spawn(&tmp.path().join(format!("n{i}")), Some(&boot)));
    }
    let home0 = nodes[0].home.clone();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = tmp.path().join("file.bin");
    std::fs::write(&file, &data).unwrap();

    let put: serde_json::Value = serde_json::from_str(&ok(
        &home0,
        &["put", file.to_str().unwrap(), "--scheme", "jewels:3/5", "--json"],
    ))
    .unwrap();
    let cap = put["cap"].as_str().unwrap().to_string();
    let holders: Vec<String> =
        put["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().into()).collect();
    assert_eq!(holders.len(), 5);
    assert_eq!(holders.iter().collect::<std::collections::HashSet<_>>().len(), 5, "distinct peers");
    assert!(!holders.contains(&nodes[0].peer), "the owner does not hold its own pieces");

    let out = tmp.path().join("out.bin");
    ok(&home0, &["get", &cap, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // A range: only those bytes (END inclusive).
    let part = tmp.path().join("part.bin");
    ok(&home0, &["get", &cap, "-o", part.to_str().unwrap(), "--range", "1000000-1299999"]);
    assert!(std::fs::read(&part).unwrap() == data[1_000_000..1_300_000]);
    let e = err_line(&home0, &["get", &cap, "-o", part.to_str().unwrap(), "--range", "9-3"]);
    assert!(e.contains("END is before START"), "{e}");
    let check: serde_json::Value = serde_json::from_str(&ok(&home0, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 5);
    assert_eq!(check["recoverable"], true);

    // Kill two holders: still whole. Kill a third: a clear error, nothing written.
    let kill = |peer: &str, nodes: &mut Vec<Node>| {
        let i = nodes.iter().position(|n| n.peer == peer).unwrap();
        drop(nodes.remove(i));
    };
    kill(&holders[0], &mut nodes);
    kill(&holders[3], &mut nodes);
    let out2 = tmp.path().join("out2.bin");
    ok(&home0, &["get", &cap, "-o", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out2).unwrap(), data);
    kill(&holders[4], &mut nodes);
    let out3 = tmp.path().join("out3.bin");
    let e = err_line(&home0, &["get", &cap, "-o", out3.to_str().unwrap()]);
    assert!(e.contains("not enough pieces") && e.contains("3 needed, 2 available"), "{e}");
    assert!(!out3.exists());
    let check: serde_json::Value = serde_json::from_str(&ok(&home0, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 2);
    assert_eq!(check["recoverable"], false);

    // Bad input: a malformed cap, an unknown cap, a wrong token, no node at all.
    let e = err_line(&home0, &["get", "jewel:r1:abc", "-o", out3.to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");
    let e = err_line(&tmp.path().join("nowhere"), &["peers"]);
    assert!(e.contains("no running node"), "{e}");
    let fake = tmp.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home0.join("api.json")).unwrap()).unwrap();
    info["token"] = "0".repeat(32).into();
    std::fs::write(fake.join("api.json"), info.to_string()).unwrap();
    let e = err_line(&fake, &["peers"]);
    assert!(e.contains("token"), "{e}");
    // The node keeps serving after all of that.
    assert!(ok(&home0, &["dir"]).contains("files this node put"));
}
