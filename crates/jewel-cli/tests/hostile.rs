//! Careless users and hostile peers (issue 13), through the `jewel` binary on real node
//! processes: each test does what an attack or a slip did, and shows it now fails
//! harmlessly, with one clear line.

use std::path::Path;
use std::time::{Duration, Instant};

use jewel_testkit::{exclusive, random_bytes, write_file, Cli, Devnet, Node};

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A second `jewel node` on a running node's home stops at once, with one line, before it
/// touches anything there: the first node's writes in progress survive, and it keeps
/// serving.
#[test]
fn a_second_node_on_a_home_touches_nothing() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(BIN);
    let home = tmp.path().join("n");
    let node = Node::builder(&cli, &home).start();
    // A write in progress, as a put in flight leaves it.
    let in_flight = home.join("store").join("tmp").join("in-flight.part");
    std::fs::write(&in_flight, b"half a piece").unwrap();
    let mut cmd = cli.command();
    cmd.args(["node", "--home", s(&home)]);
    let o = jewel_testkit::run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!o.success());
    let e = o.stderr.trim();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("another jewel node") && e.contains(&node.pid().to_string()), "{e}");
    assert!(in_flight.exists(), "the running node's temp files are untouched");
    node.ok(&["status"]);
}

/// Puts take regular files only: a device, a FIFO, the node's own stdin and a /proc file
/// (whose size says 0) are refused with a reason at once, and the node is not left busy.
#[test]
fn puts_take_regular_files_only() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let owner = &net.peers[0];
    let fifo = net.path("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (path, says) in [
        ("/dev/zero", "is a character device, not a regular file"),
        (s(&fifo), "is a FIFO (named pipe), not a regular file"),
        ("/dev/stdin", "not a regular file"),
        ("/proc/cpuinfo", "has more bytes than its size said"),
    ] {
        let t = Instant::now();
        let e = owner.err_line(&["put", path, "--scheme", "replicate:2"]);
        assert!(e.contains(says), "{path}: {e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{path} took {:?}", t.elapsed());
    }
    // The node is not spinning on any of them: its status answers, and a real file goes in.
    owner.ok(&["status"]);
    let file = write_file(&net.path("real"), b"a regular file");
    owner.ok(&["put", &file, "--scheme", "replicate:2"]);
}

/// `jewel put -` stores the CLI's own standard input, streamed through the node: from a
/// pipe (spooled, or streamed as it comes with `--size`) and from a redirected file; a
/// stream longer or shorter than its stated size fails with the reason and stores nothing.
#[test]
fn put_dash_streams_the_clis_standard_input() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let owner = &net.peers[0];
    let data = random_bytes(3_000_000, 7);
    let size = data.len().to_string();
    let got = net.path("got");
    let back = |cap: &str| {
        owner.ok(&["get", cap.trim(), "-o", s(&got), "--force"]);
        assert!(std::fs::read(&got).unwrap() == data, "the file came back different");
    };
    // A pipe, spooled first; then a pipe of a stated size, streamed.
    let fed = |args: &[&str]| owner.cli().run_fed(&owner.home, args, &data);
    let spooled = fed(&["put", "-", "--name", "piped", "--scheme", "replicate:2"]);
    assert!(spooled.success(), "{}", spooled.stderr);
    back(&spooled.stdout);
    let streamed = fed(&["put", "-", "--size", &size, "--scheme", "jewels:2/3"]);
    assert!(streamed.success(), "{}", streamed.stderr);
    back(&streamed.stdout);
    // A redirected file: its size is known.
    let file = write_file(&net.path("f"), &data);
    let mut cmd = owner.cli().command();
    cmd.arg("--home").arg(&owner.home).args(["put", "-", "--scheme", "replicate:2"]);
    cmd.stdin(std::fs::File::open(&file).unwrap());
    let redirected = cmd.output().unwrap();
    assert!(redirected.status.success(), "{}", String::from_utf8_lossy(&redirected.stderr));
    back(&String::from_utf8_lossy(&redirected.stdout));
    let dir = owner.json(&["dir", "--json"]);
    let names: Vec<&str> =
        dir["files"].as_object().unwrap().values().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"piped"), "{names:?}");
    // Wrong sizes: one line each, nothing more recorded.
    for (stated, says) in [("2000000", "more bytes than its size said"), ("4000000", "ended before its size")]
    {
        let o = fed(&["put", "-", "--size", stated, "--scheme", "replicate:2"]);
        assert!(!o.success());
        let e = o.stderr.trim();
        assert!(e.lines().count() == 1 && e.contains(says), "{stated}: {e}");
    }
    assert_eq!(owner.json(&["dir", "--json"])["files"].as_object().unwrap().len(), 3);
}

/// `-o` never clobbers by surprise and never writes through a link; a range past the end is
/// an error; all before a byte is fetched.
#[test]
fn gets_refuse_outputs_and_ranges_that_make_no_sense() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let owner = &net.peers[0];
    let data = random_bytes(100_000, 1);
    let cap =
        owner.ok(&["put", &write_file(&net.path("f"), &data), "--scheme", "replicate:2"]).trim().to_string();
    let existing = write_file(&net.path("existing"), b"precious");
    let e = owner.err_line(&["get", &cap, "-o", &existing]);
    assert!(e.contains("exists; pass --force"), "{e}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    let e = owner.err_line(&["get", &cap, "-o", s(&net.path(""))]);
    assert!(e.contains("is a folder"), "{e}");
    let link = net.path("link");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let e = owner.err_line(&["get", &cap, "-o", s(&link), "--force"]);
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious", "nothing was written through the link");
    owner.ok(&["get", &cap, "-o", &existing, "--force"]);
    assert!(std::fs::read(&existing).unwrap() == data, "--force replaces the file");
    let e = owner.err_line(&["get", &cap, "-o", s(&net.path("r")), "--range", "100000-100010"]);
    assert!(e.contains("starts at byte 100000, but the file has 100000 bytes"), "{e}");
    assert!(!net.path("r").exists());
    // A cap with one character too many says the real lengths.
    let e = owner.err_line(&["get", &format!("{cap}a"), "-o", s(&net.path("x"))]);
    assert!(e.contains("characters after its prefix") && e.contains("a read cap has"), "{e}");
}

/// Nothing secret in logs at any level: the API token appears in neither the node's log nor
/// the CLI's at `RUST_LOG=trace`. Every file in a home is the owner's alone.
#[test]
fn no_secrets_in_logs_and_homes_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(BIN);
    let hub = Node::builder(&cli, &tmp.path().join("hub")).start();
    let holder = Node::builder(&cli, &tmp.path().join("holder")).bootstrap(&hub.addr).start();
    let node =
        Node::builder(&cli, &tmp.path().join("n")).bootstrap(&hub.addr).env("RUST_LOG", "trace").start();
    node.wait_knows(&[&holder.peer]);
    let file = write_file(&tmp.path().join("f"), &random_bytes(50_000, 2));
    let mut cmd = cli.command();
    cmd.env("RUST_LOG", "trace").arg("--home").arg(&node.home).args([
        "put",
        &file,
        "--scheme",
        "replicate:2",
    ]);
    let put = jewel_testkit::run_with_timeout(cmd, Duration::from_secs(60));
    assert!(put.success(), "{}", put.stderr);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.home.join("api.json")).unwrap()).unwrap();
    let token = info["token"].as_str().unwrap();
    let node_log = node.log_lines().join("\n");
    assert!(node_log.len() > 10_000, "the node logged at trace level ({} bytes)", node_log.len());
    assert!(!node_log.contains(token), "the node's log holds the API token");
    assert!(!put.stderr.contains(token), "the CLI's log holds the API token");
    for home in [&node.home, &holder.home] {
        assert_eq!(std::fs::metadata(home).unwrap().permissions().mode() & 0o777, 0o700);
        let mut todo = vec![home.to_path_buf()];
        let mut files = 0;
        while let Some(p) = todo.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    files += 1;
                    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                }
            }
        }
        assert!(files >= 4, "{} files checked in {}", files, home.display());
    }
}

/// A node started without `--capacity` takes a tenth of the free disk for strangers, not
/// all of it.
#[test]
fn the_default_capacity_is_a_tenth_of_the_free_disk() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::builder(&Cli::new(BIN), &tmp.path().join("n")).start();
    let dir = node.json(&["dir", "--json"]);
    let capacity = dir["capacity"].as_u64().expect("a capacity, not unlimited");
    let df =
        std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(&node.home).output().unwrap();
    let free: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    let tenth = free / 10;
    assert!(
        capacity.abs_diff(tenth) < tenth / 20 + (64 << 20),
        "capacity {capacity}, a tenth of free {tenth}"
    );
}

/// SIGTERM stops a node within a few seconds even in the middle of a long get.
#[test]
fn a_node_stops_promptly_in_the_middle_of_a_get() {
    let _one = exclusive();
    let slow = ["--max-upload", "200000"];
    let mut net =
        Devnet::start_with_hub(Path::new(BIN), &slow, 4, |_| slow.iter().map(|a| a.to_string()).collect());
    let data = random_bytes(8 << 20, 3);
    let put =
        net.peers[1].json(&["put", &write_file(&net.path("f"), &data), "--scheme", "replicate:2", "--json"]);
    let cap = put["cap"].as_str().unwrap().to_string();
    let holders: Vec<&str> = put["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    // A peer that holds none of it gets it from holders that serve 200 kB/s: about 40 s.
    let g = (0..net.peers.len()).find(|&i| i != 1 && !holders.contains(&net.peers[i].peer.as_str())).unwrap();
    let (cli, home, out) = (net.peers[g].cli().clone(), net.peers[g].home.clone(), net.path("out"));
    let get = std::thread::spawn(move || cli.run(&home, &["get", &cap, "-o", s(&out)]));
    let part = net.path("");
    jewel_testkit::eventually("the get is under way", Duration::from_secs(30), || {
        std::fs::read_dir(&part)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".jewel-part"))
            .then_some(())
    });
    let t = Instant::now();
    let status = net.peers[g].stop();
    assert!(status.is_some(), "the node did not stop on SIGTERM");
    assert!(t.elapsed() < Duration::from_secs(8), "it took {:?} to stop", t.elapsed());
    assert!(!get.join().unwrap().success(), "the get was cut short");
}

/// `jewel devnet kill` signals a recorded pid only if it is still that peer's node: a pid
/// reused by another process is left alone.
#[test]
fn devnet_never_signals_a_process_that_is_not_its_node() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("live");
    let cli = Cli::new(BIN);
    let run = |args: &[&str]| {
        let mut cmd = cli.command();
        cmd.args(args);
        jewel_testkit::run_with_timeout(cmd, Duration::from_secs(60))
    };
    assert!(run(&["devnet", "up", "--peers", "2", "--dir", s(&dir)]).success());
    // Peer 1 dies; its pid is "reused" by an unrelated process.
    let state_path = dir.join("devnet.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let real = state["peers"][1]["pid"].as_u64().unwrap();
    let mut bystander = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    state["peers"][1]["pid"] = bystander.id().into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let o = run(&["devnet", "kill", "1", "--dir", s(&dir)]);
    assert!(!o.success() && o.stderr.contains("is not its node"), "{}", o.stderr);
    assert!(bystander.try_wait().unwrap().is_none(), "the bystander still runs");
    bystander.kill().unwrap();
    let _ = bystander.wait();
    // Put the real pid back so `down` stops everything.
    state["peers"][1]["pid"] = real.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    assert!(run(&["devnet", "down", "--dir", s(&dir)]).success());
}

/// `jewel rm` while a holder is offline: the rm says which holder still owes the release,
/// the node keeps that debt in its state (across its own restart), and the holder drops the
/// pieces once it is back.
#[test]
fn a_release_a_holder_missed_is_retried_until_it_takes_it() {
    let _one = exclusive();
    let every = ["--audit-every", "1"];
    let mut net =
        Devnet::start_with_hub(Path::new(BIN), &every, 4, |_| every.iter().map(|a| a.to_string()).collect());
    let put = net.peers[0].json(&[
        "put",
        &write_file(&net.path("f"), &random_bytes(80_000, 4)),
        "--scheme",
        "replicate:2",
        "--json",
    ]);
    let cap = put["cap"].as_str().unwrap().to_string();
    let holders: Vec<String> =
        put["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
    let away = holders.iter().find(|h| **h != net.hub.peer).unwrap().clone();
    let i = net.index_of(&away);
    net.peers[i].kill();
    let o = net.peers[0].run(&["rm", &cap]);
    assert!(o.success(), "{}", o.stderr);
    assert!(o.stderr.contains(&away) && o.stderr.contains("still owes the release"), "{}", o.stderr);
    // The owner restarts meanwhile: the debt is in its state, not its memory.
    net.peers[0].stop();
    net.peers[0].restart();
    // The holder comes back (through the owner, so the owner knows where it is now).
    let owner_addr = net.peers[0].addr.clone();
    net.peers[i].restart_with(&["--bootstrap", &owner_addr, "--audit-every", "1"]);
    assert_eq!(
        net.peers[i].json(&["dir", "--json"])["blocks"].as_array().unwrap().len(),
        2,
        "it still had them"
    );
    jewel_testkit::eventually("the holder took the release", Duration::from_secs(60), || {
        (net.peers[i].json(&["dir", "--json"])["blocks"].as_array().unwrap().is_empty()).then_some(())
    });
    let status = net.peers[0].json(&["status", "--json"]);
    let release =
        status["workers"].as_array().unwrap().iter().find(|w| w["name"] == "release").unwrap().clone();
    assert!(release["last_found"].as_str().unwrap().contains("0 still owed"), "{release}");
}

/// A cap need not be on the command line, where `ps` shows it to every user of the
/// machine: commands read it from a file (`--cap-file`) or standard input (`-`).
#[test]
fn caps_can_stay_out_of_the_process_list() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let data = random_bytes(60_000, 5);
    let cap = net.peers[0]
        .ok(&["put", &write_file(&net.path("f"), &data), "--scheme", "replicate:2"])
        .trim()
        .to_string();
    let cap_file = write_file(&net.path("cap"), format!("{cap}\n").as_bytes());
    let out = net.path("out");
    net.peers[1].ok(&["get", "--cap-file", &cap_file, "-o", s(&out)]);
    assert!(std::fs::read(&out).unwrap() == data);
    let o = net.peers[1].cli().run_fed(
        &net.peers[1].home,
        &["get", "-", "-o", s(&net.path("out2"))],
        format!("{cap}\n").as_bytes(),
    );
    assert!(o.success(), "{}", o.stderr);
    assert!(std::fs::read(net.path("out2")).unwrap() == data);
    let o = net.peers[0].cli().run_fed(&net.peers[0].home, &["check", "-", "--json"], cap.as_bytes());
    assert!(o.success() && o.stdout.contains("\"alive\":2"), "{} {}", o.stdout, o.stderr);
    let e = net.peers[0].cli().run_fed(&net.peers[0].home, &["rm", "-"], b"");
    assert!(!e.success() && e.stderr.contains("no cap was given"), "{}", e.stderr);
}

/// Descriptors: a node started with the common soft limit of 1024 open files raises it,
/// limits the connections strangers can hold it with, and stays responsive while 1100
/// half-open TCP connections (connected, never speaking) sit on its port.
#[test]
fn half_open_connections_do_not_exhaust_a_node() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(BIN);
    let hub = Node::builder(&cli, &tmp.path().join("hub")).start();
    let holders: Vec<Node> = (0..2)
        .map(|i| Node::builder(&cli, &tmp.path().join(format!("h{i}"))).bootstrap(&hub.addr).start())
        .collect();
    let node = Node::builder(&cli, &tmp.path().join("n")).bootstrap(&hub.addr).soft_nofile(1024).start();
    node.wait_knows(&[&holders[0].peer, &holders[1].peer]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(open_files[3], open_files[4], "the soft limit was raised to the hard one: {limits}");
    assert_ne!(open_files[3], "1024", "{limits}");
    // 1100 connections that never say a word.
    let port: u16 = node.addr.split('/').nth(4).unwrap().parse().unwrap();
    let idle: Vec<std::net::TcpStream> =
        (0..1100).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() > 1000, "only {} connections were made", idle.len());
    let t = Instant::now();
    node.ok(&["dir"]);
    assert!(t.elapsed() < Duration::from_secs(5), "dir took {:?}", t.elapsed());
    let data = random_bytes(40_000, 6);
    let cap = node
        .ok(&["put", &write_file(&tmp.path().join("f"), &data), "--scheme", "replicate:2"])
        .trim()
        .to_string();
    let out = tmp.path().join("out");
    node.ok(&["get", &cap, "-o", s(&out)]);
    assert!(std::fs::read(&out).unwrap() == data);
    drop(idle);
}

/// `--peer-quota`: one owner cannot fill its holders, however it asks; once its share is
/// used its puts are refused with the reason, and other owners keep their own shares on
/// the same holders.
#[test]
fn one_owner_fills_only_its_share_of_each_holder() {
    let _one = exclusive();
    let quota = || vec!["--peer-quota".to_string(), "300KiB".to_string()];
    let net = Devnet::start_with_hub(Path::new(BIN), &["--peer-quota", "300KiB"], 3, |_| quota());
    let (a, b) = (&net.peers[0], &net.peers[1]);
    // Three copies of 200 kB: one on each of a's three other peers, within its share.
    let first = write_file(&net.path("first"), &random_bytes(200_000, 1));
    a.ok(&["put", &first, "--scheme", "replicate:3"]);
    // Its share of each is now too small for another copy.
    let second = write_file(&net.path("second"), &random_bytes(200_000, 2));
    let e = a.err_line(&["put", &second, "--scheme", "replicate:1"]);
    assert!(e.contains("share of the holder is full"), "{e}");
    // Another owner's share is its own.
    let put = b.json(&["put", &second, "--scheme", "replicate:2", "--json"]);
    let got = net.path("got");
    a.ok(&["get", put["cap"].as_str().unwrap(), "-o", s(&got)]);
    assert_eq!(std::fs::read(&got).unwrap(), random_bytes(200_000, 2));
}

/// A put stops when its client goes away: the CLI killed mid-put leaves the node reading
/// nothing more of the file within seconds (not after the whole file), and no file listed.
/// The file is 64 GiB of holes: quick to make, and minutes to read through.
#[test]
fn a_put_stops_when_its_client_goes_away() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 2, |_| vec![]);
    let owner = &net.peers[0];
    let file = net.path("huge");
    std::fs::File::create(&file).unwrap().set_len(64 << 30).unwrap();
    let mut cmd = owner.cli().command();
    cmd.arg("--home").arg(&owner.home).args(["put", s(&file), "--scheme", "replicate:1"]);
    let mut put =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let running = || owner.json(&["status", "--json"])["puts_running"].as_u64().unwrap();
    jewel_testkit::eventually("the put is under way", Duration::from_secs(30), || {
        (running() == 1).then_some(())
    });
    put.kill().unwrap();
    put.wait().unwrap();
    let t = Instant::now();
    jewel_testkit::eventually("the put stops", Duration::from_secs(10), || (running() == 0).then_some(()));
    eprintln!("the put stopped {:?} after its client was killed", t.elapsed());
    let dir = owner.json(&["dir", "--json"]);
    assert!(dir["files"].as_object().unwrap().is_empty(), "{dir}");
}
