//! `jewel devnet` end to end: six peers up, a file put and read back, holders killed and
//! restarted with their identity and store, and everything stopped again.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

fn run(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(o.status.success(), "jewel {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Stops the devnet even when an assertion fails, so no process outlives the test.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(BIN).args(["devnet", "down", "--dir"]).arg(&self.0).output();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn devnet_up_put_kill_start_down() {
    let _one = jewel_testkit::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("live");
    let up = run(&["devnet", "up", "--peers", "6", "--dir", s(&dir)]);
    let _down = Down(dir.clone());
    assert!(up.contains("devnet of 6 peers ready"), "{up}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).unwrap()).unwrap();
    let peers = state["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 6);
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(p["index"], i);
        for key in ["pid", "peer_id", "home", "api", "listen"] {
            assert!(!p[key].is_null(), "devnet.json lacks {key}");
        }
    }

    let home0 = dir.join("peer-0");
    let file = tmp.path().join("f.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8 ^ (i >> 9) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let put: serde_json::Value = serde_json::from_str(&run(&[
        "--home",
        s(&home0),
        "put",
        s(&file),
        "--scheme",
        "jewels:3/5",
        "--json",
    ]))
    .unwrap();
    let cap = put["cap"].as_str().unwrap().to_string();
    let index_of = |peer: &str| peers.iter().position(|p| p["peer_id"] == peer).unwrap();
    let holders: Vec<usize> =
        put["holders"].as_array().unwrap().iter().map(|h| index_of(h.as_str().unwrap())).collect();

    // Two holders crash: the file still comes back whole.
    for i in &holders[..2] {
        run(&["devnet", "kill", &i.to_string(), "--dir", s(&dir)]);
    }
    let status = run(&["devnet", "status", "--dir", s(&dir)]);
    assert_eq!(status.matches("stopped").count(), 2, "{status}");
    let out = tmp.path().join("out.bin");
    run(&["--home", s(&home0), "get", &cap, "-o", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // They come back with the same identity and their pieces.
    for i in &holders[..2] {
        run(&["devnet", "start", &i.to_string(), "--dir", s(&dir)]);
    }
    let check: serde_json::Value =
        serde_json::from_str(&run(&["--home", s(&home0), "check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 5, "{check}");

    // The pids as they are now: the restarted peers run under new ones.
    let now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).unwrap()).unwrap();
    let pids: Vec<u64> =
        now["peers"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    for i in &holders[..2] {
        assert_ne!(pids[*i], peers[*i]["pid"].as_u64().unwrap(), "peer {i} was restarted");
    }
    let down = run(&["devnet", "down", "--dir", s(&dir)]);
    assert!(down.contains("stopped"), "{down}");
    assert!(!dir.join("devnet.json").exists());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z "),
            "process {pid} outlived devnet down"
        );
    }
}
