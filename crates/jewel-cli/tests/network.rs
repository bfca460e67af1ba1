//! The real binary on real local networks of `jewel node` processes on 127.0.0.1 (and in
//! network namespaces), driven through the CLI. Readiness is read from each node's stdout
//! (it prints its API address only after writing api.json), never waited for with sleeps.
//! Each test holds the process-test lock: one network at a time on the 2-core machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use jewel_testkit::{exclusive, Cli, Devnet, Lan, Node, Sites};

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

fn cli() -> Cli {
    Cli::new(BIN)
}

fn ok(home: &Path, args: &[&str]) -> String {
    cli().ok(home, args)
}

fn err_line(home: &Path, args: &[&str]) -> String {
    cli().err_line(home, args)
}

#[test]
fn six_peers_put_get_and_survive_what_the_scheme_promises() {
    let _one = exclusive();
    let mut net = Devnet::start(Path::new(BIN), 6, |_| Vec::new());
    let home0 = net.peers[0].home.clone();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = net.path("file.bin");
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
    assert!(!holders.contains(&net.peers[0].peer), "the owner does not hold its own pieces");

    let out = net.path("out.bin");
    ok(&home0, &["get", &cap, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // A range: only those bytes (END inclusive).
    let part = net.path("part.bin");
    ok(&home0, &["get", &cap, "-o", part.to_str().unwrap(), "--range", "1000000-1299999"]);
    assert!(std::fs::read(&part).unwrap() == data[1_000_000..1_300_000]);
    let e = err_line(&home0, &["get", &cap, "-o", part.to_str().unwrap(), "--range", "9-3"]);
    assert!(e.contains("END is before START"), "{e}");
    let check: serde_json::Value = serde_json::from_str(&ok(&home0, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 5);
    assert_eq!(check["recoverable"], true);

    // Kill two holders: still whole. Kill a third: a clear error, nothing written. (The hub,
    // which every peer bootstrapped from, is never the one killed.)
    let victims: Vec<usize> =
        holders.iter().filter(|h| **h != net.hub.peer).map(|h| net.index_of(h)).collect();
    net.peers[victims[0]].kill();
    net.peers[victims[1]].kill();
    let out2 = net.path("out2.bin");
    ok(&home0, &["get", &cap, "-o", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out2).unwrap(), data);
    net.peers[victims[2]].kill();
    let out3 = net.path("out3.bin");
    let e = err_line(&home0, &["get", &cap, "-o", out3.to_str().unwrap()]);
    assert!(e.contains("not enough pieces") && e.contains("3 needed, 2 available"), "{e}");
    assert!(e.contains("found 5 of 5 pieces' holders") && e.contains("looked for"), "{e}");
    assert!(!out3.exists());
    let check: serde_json::Value = serde_json::from_str(&ok(&home0, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 2);
    assert_eq!(check["recoverable"], false);

    // Bad input: a malformed cap, an unknown cap, a wrong token, no node at all.
    let e = err_line(&home0, &["get", "jewel:r1:abc", "-o", out3.to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");
    let e = err_line(&net.path("nowhere"), &["peers"]);
    assert!(e.contains("no running node"), "{e}");
    let fake = net.path("fake");
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

/// A process on a pseudo-terminal: what it prints is collected by a thread, and the test
/// waits for text (never for time) before it types.
struct Pty {
    master: std::fs::File,
    child: Child,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: String,
    /// Our copy of the terminal side, held until the end: when the program's copies were
    /// the last and it exits, Linux may drop what it printed last before we read it.
    _slave: std::fs::File,
}

impl Pty {
    fn spawn(home: &Path, args: &[&str]) -> Pty {
        use std::os::fd::FromRawFd;
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: 50, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty fills two new descriptors, which are owned by the Files below.
        let r =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(r, 0, "openpty failed");
        // SAFETY: both descriptors were just opened and are not owned elsewhere.
        let (master, slave) =
            unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
        let mut cmd = Command::new(BIN);
        cmd.arg("--home").arg(home).args(args);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: only async-signal-safe calls: a new session with the pty as its terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty { master, child, output, seen: String::new(), _slave: slave }
    }

    /// Waits until the program has printed `text`, and forgets everything up to it.
    fn expect(&mut self, text: &str) {
        loop {
            if let Some(at) = self.seen.find(text) {
                self.seen.drain(..at + text.len());
                return;
            }
            match self.output.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("never saw {text:?}; the screen ends with {:?}", self.seen),
            }
        }
    }

    fn send(&mut self, keys: &str) {
        use std::io::Write;
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_menu_works_with_arrow_keys_and_letters() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let tmp = &net.dir;
    let first = &net.peers[0];
    let others: Vec<&Node> = std::iter::once(&net.hub).chain(&net.peers[1..]).collect();
    let file = tmp.path().join("notes.txt");
    let data = b"menu test: dear diary, today I stored a file with the arrow keys.\n".repeat(500);
    std::fs::write(&file, &data).unwrap();
    let out = tmp.path().join("back.txt");

    let mut menu = Pty::spawn(&first.home, &["menu"]);
    menu.expect("q/Esc back");
    // A letter: set the default scheme to one that fits three peers.
    menu.send("c");
    menu.expect("new default scheme");
    menu.send("replicate:2\n");
    menu.expect("default scheme is now replicate:2");
    menu.expect("press Enter");
    menu.send("\n");
    // The arrow keys: one down from "dir" is "store".
    menu.expect("q/Esc back");
    menu.send("\x1b[B");
    menu.expect("> [s] store");
    menu.send("\r");
    menu.expect("file to store");
    menu.send(&format!("{}\n", file.display()));
    menu.expect("jewel:r1:");
    menu.expect("2 pieces on 2 peers");
    menu.expect("press Enter");
    menu.send("\n");
    menu.expect("q/Esc back");
    menu.send("d");
    menu.expect("files this node put:");
    menu.expect("notes.txt");
    menu.expect("press Enter");
    menu.send("\n");
    menu.expect("q/Esc back");
    menu.send("g");
    menu.expect("which file to get?");
    menu.send("\r");
    menu.expect("save as");
    menu.send(&format!("{}\n", out.display()));
    menu.expect("got ");
    menu.expect("press Enter");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    menu.send("\n");
    menu.expect("q/Esc back");
    menu.send("x");
    menu.expect("which file to delete?");
    menu.send("\r");
    menu.expect("type yes");
    menu.send("yes\n");
    menu.expect("released");
    menu.expect("press Enter");
    menu.send("\n");
    menu.expect("q/Esc back");
    menu.send("q");
    menu.expect("bye");
    assert!(menu.child.wait().unwrap().success());
    let dir: serde_json::Value = serde_json::from_str(&ok(&first.home, &["dir", "--json"])).unwrap();
    assert!(dir["files"].as_object().unwrap().is_empty(), "the file was released");
    // Released means freed: the holders deleted the pieces and account for it exactly.
    for holder in others {
        let dir: serde_json::Value = serde_json::from_str(&ok(&holder.home, &["dir", "--json"])).unwrap();
        assert_eq!(dir["blocks"].as_array().unwrap().len(), 0, "{dir}");
        assert_eq!(dir["used"], 0, "{dir}");
    }
}

/// A tiny deterministic generator for the chaos loop.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Churn: 12 peers (one owner, eleven holders); a chaos loop kills holders (SIGKILL),
/// restarts them (a third of the time with their disk wiped), while files are put and
/// got. It never takes down more than n-k of one file's holders at once. Every get must
/// be exact; once the chaos stops, `jewel repair` brings every file back to all n pieces
/// alive; nothing is lost.
#[test]
fn churn_never_loses_a_file_and_repair_heals_it() {
    const HOLDERS: usize = 11;
    const TOLERATES: usize = 2; // jewels:3/5
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let owner = Node::builder(&cli(), &tmp.path().join("owner")).start();
    let boot = owner.addr.clone();
    let homes: Vec<PathBuf> = (0..HOLDERS).map(|i| tmp.path().join(format!("h{i}"))).collect();
    let spawn = |home: &Path| Node::builder(&cli(), home).bootstrap(&boot).start();
    let mut holders: Vec<Option<Node>> = homes.iter().map(|h| Some(spawn(h))).collect();
    let ids: Vec<String> = holders.iter().map(|n| n.as_ref().unwrap().peer.clone()).collect();
    // Per file: its cap, its bytes, and the holder index of each slot.
    let mut files: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    // Holders whose pieces are gone for good (wiped), until repair moves them.
    let mut wiped = [false; HOLDERS];
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let (mut gets, mut kills) = (0, 0);
    let put = |i: usize, files: &mut Vec<(String, Vec<u8>, Vec<usize>)>| {
        // Incompressible, so pieces (and repairs) move real bytes.
        let mut rng = Dice(0x1234_5678 + i as u64);
        let data: Vec<u8> = (0..200_000 + i * 1000).map(|_| rng.roll(256) as u8).collect();
        let file = tmp.path().join(format!("f{i}"));
        std::fs::write(&file, &data).unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok(
            &owner.home,
            &["put", file.to_str().unwrap(), "--scheme", "jewels:3/5", "--json"],
        ))
        .unwrap();
        let slots: Vec<usize> = v["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| ids.iter().position(|p| p == h.as_str().unwrap()).unwrap())
            .collect();
        files.push((v["cap"].as_str().unwrap().to_string(), data, slots));
    };
    for i in 0..4 {
        put(i, &mut files);
    }
    for round in 0..80 {
        let down: Vec<bool> = (0..HOLDERS).map(|h| holders[h].is_none() || wiped[h]).collect();
        let alive = holders.iter().filter(|h| h.is_some()).count();
        match dice.roll(3) {
            // Kill a holder whose loss every file can afford (keeping enough for new puts).
            0 | 1 if alive > 7 => {
                let ok_to_kill = |h: usize| {
                    holders[h].is_some()
                        && files.iter().all(|(_, _, slots)| {
                            slots.iter().filter(|s| down[**s] || **s == h).count() <= TOLERATES
                        })
                };
                let choices: Vec<usize> = (0..HOLDERS).filter(|h| ok_to_kill(*h)).collect();
                if !choices.is_empty() {
                    let h = choices[dice.roll(choices.len())];
                    drop(holders[h].take());
                    kills += 1;
                }
            }
            // Bring one back, a third of the time with an empty disk.
            _ => {
                let dead: Vec<usize> = (0..HOLDERS).filter(|h| holders[*h].is_none()).collect();
                if !dead.is_empty() {
                    let h = dead[dice.roll(dead.len())];
                    if dice.roll(3) == 0 {
                        std::fs::remove_dir_all(homes[h].join("store")).unwrap();
                        wiped[h] = true;
                    }
                    holders[h] = Some(spawn(&homes[h]));
                }
            }
        }
        if round % 10 == 9 {
            put(files.len(), &mut files);
        }
        let _ = alive;
        let (cap, data, _) = &files[dice.roll(files.len())];
        let out = tmp.path().join(format!("out{round}"));
        ok(&owner.home, &["get", cap, "-o", out.to_str().unwrap()]);
        assert!(std::fs::read(&out).unwrap() == *data, "round {round}: a get returned other bytes");
        std::fs::remove_file(&out).unwrap();
        gets += 1;
    }
    // The chaos stops with some holders still down: repair every file onto live peers.
    let (mut repairs, mut bytes) = (0, 0u64);
    for (cap, data, _) in &files {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&owner.home, &["repair", cap, "--json"])).unwrap();
        let r = &v["repaired"];
        let n = r["slots"].as_array().unwrap().len();
        if n > 0 {
            repairs += 1;
            bytes += r["bytes_written"].as_u64().unwrap();
            assert!(
                r["bytes_written"].as_u64().unwrap() as f64
                    <= 1.05 * r["bytes_lost"].as_u64().unwrap() as f64 + 2048.0,
                "{r}"
            );
        }
        let check: serde_json::Value =
            serde_json::from_str(&ok(&owner.home, &["check", cap, "--json"])).unwrap();
        assert_eq!(check["alive"], 5, "every piece alive after repair: {check}");
        let out = tmp.path().join("final");
        ok(&owner.home, &["get", cap, "-o", out.to_str().unwrap(), "--force"]);
        assert!(std::fs::read(&out).unwrap() == *data, "nothing is lost");
    }
    println!(
        "churn: files {}, gets {gets}, kills {kills}, repairs {repairs}, bytes repaired {bytes}",
        files.len()
    );
    assert!(kills > 5, "the chaos loop killed only {kills} peers");
}

/// Audits and repair on a node: with `--audit-every 1`, losing more pieces than
/// `tolerates - r` makes the owner repair by itself; a holder whose piece rots is shown as
/// corrupt by `jewel check` and `jewel repair` moves that piece to another peer.
#[test]
fn the_owner_repairs_lost_and_corrupt_pieces() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let owner = Node::builder(&cli(), &tmp.path().join("owner")).args(&["--audit-every", "1"]).start();
    let boot = owner.addr.clone();
    let mut holders: Vec<Option<Node>> = (0..8)
        .map(|i| Some(Node::builder(&cli(), &tmp.path().join(format!("h{i}"))).bootstrap(&boot).start()))
        .collect();
    let data: Vec<u8> = {
        let mut d = Dice(77);
        (0..300_000).map(|_| d.roll(256) as u8).collect()
    };
    let file = tmp.path().join("f");
    std::fs::write(&file, &data).unwrap();
    let put: serde_json::Value = serde_json::from_str(&ok(
        &owner.home,
        &["put", file.to_str().unwrap(), "--scheme", "jewels:3/5", "--json"],
    ))
    .unwrap();
    let cap = put["cap"].as_str().unwrap().to_string();
    let placed: Vec<String> =
        put["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().into()).collect();
    // Two holders die: 3 of 5 alive is below k + r = 4, so the owner repairs by itself.
    for peer in &placed[..2] {
        let i = holders.iter().position(|h| h.as_ref().is_some_and(|h| &h.peer == peer)).unwrap();
        drop(holders[i].take());
    }
    owner.wait_log("repaired", Duration::from_secs(60));
    let check: serde_json::Value =
        serde_json::from_str(&ok(&owner.home, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["alive"], 5, "{check}");

    // One piece rots on its holder's disk: an audit shows it corrupt, repair moves it.
    let piece = &check["pieces"][2];
    let (id, holder) = (piece["piece"].as_str().unwrap(), piece["holder"].as_str().unwrap());
    let home = &holders.iter().flatten().find(|h| h.peer == holder).unwrap().home;
    let path = home.join("store").join("blocks").join(&id[..2]).join(id);
    // One flipped byte per 16 KiB chunk group, so whichever group the audit picks is bad.
    let mut bytes = std::fs::read(&path).unwrap();
    for at in (1000..bytes.len()).step_by(16 << 10) {
        bytes[at] ^= 0x55;
    }
    std::fs::write(&path, bytes).unwrap();
    let check: serde_json::Value =
        serde_json::from_str(&ok(&owner.home, &["check", &cap, "--json"])).unwrap();
    assert_eq!(check["pieces"][2]["state"], "corrupt", "{check}");
    let fixed: serde_json::Value =
        serde_json::from_str(&ok(&owner.home, &["repair", &cap, "--json"])).unwrap();
    assert_eq!(fixed["repaired"]["slots"], serde_json::json!([2]), "{fixed}");
    assert_ne!(fixed["check"]["pieces"][2]["holder"].as_str().unwrap(), holder, "moved elsewhere");
    assert_eq!(fixed["check"]["alive"], 5, "{fixed}");
    let out = tmp.path().join("out");
    ok(&owner.home, &["get", &cap, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
}

/// The bytes one audit proves (the store's chunk group).
const GROUP: usize = 16 << 10;

/// A holder that answers audits slowly (it serves at 3 kB/s, so a proof takes seconds) is
/// marked late, and still counted as holding its piece.
#[test]
fn a_slow_holder_is_shown_late_by_check() {
    let _one = exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let owner = Node::builder(&cli(), &tmp.path().join("owner")).start();
    let boot = owner.addr.clone();
    let slow = Node::builder(&cli(), &tmp.path().join("slow"))
        .bootstrap(&boot)
        .args(&["--max-upload", "3000"])
        .start();
    let fast = Node::builder(&cli(), &tmp.path().join("fast")).bootstrap(&boot).start();
    let file = tmp.path().join("f");
    let mut d = Dice(5);
    // An audit proves one random 16 KiB group, and the last group is shorter: size the file
    // so that even that one takes the slow holder over 2 s (10 kB at 3 kB/s) and every group
    // well under the 10 s that counts as missing (16 KiB at 3 kB/s).
    let size = 6 * GROUP + 10_000;
    std::fs::write(&file, (0..size).map(|_| d.roll(256) as u8).collect::<Vec<u8>>()).unwrap();
    let put: serde_json::Value = serde_json::from_str(&ok(
        &owner.home,
        &["put", file.to_str().unwrap(), "--scheme", "replicate:2", "--json"],
    ))
    .unwrap();
    let cap = put["cap"].as_str().unwrap();
    let check: serde_json::Value = serde_json::from_str(&ok(&owner.home, &["check", cap, "--json"])).unwrap();
    let id = check["pieces"][0]["piece"].as_str().unwrap();
    let piece = slow.home.join("store").join("blocks").join(&id[..2]).join(id);
    let last = std::fs::metadata(&piece).unwrap().len() as usize % GROUP;
    assert!((9_000..GROUP).contains(&last), "the piece's last group is {last} bytes; resize the file");
    for p in check["pieces"].as_array().unwrap() {
        let want = if p["holder"] == slow.peer.as_str() { "late" } else { "alive" };
        assert_eq!(p["state"], want, "{check}");
    }
    assert_eq!(check["alive"], 2, "late pieces still count: {check}");
    drop(fast);
}

/// With `--mdns` and no bootstrap address, two peers on one local network find each other,
/// and one stores a file on the other.
#[test]
fn mdns_finds_a_peer_on_the_local_network() {
    let _one = exclusive();
    let lan = Lan::new();
    let tmp = tempfile::tempdir().unwrap();
    let (na, nb) = (lan.ns[0].as_str(), lan.ns[1].as_str());
    let a = Node::builder(&cli(), &tmp.path().join("a"))
        .netns(na)
        .args(&["--mdns", "--listen", "/ip4/10.77.0.1/tcp/0"])
        .start();
    let b = Node::builder(&cli(), &tmp.path().join("b"))
        .netns(nb)
        .args(&["--mdns", "--listen", "/ip4/10.77.0.2/tcp/0"])
        .start();
    let found = a.wait_log("found a peer on the local network", Duration::from_secs(60));
    assert!(found.contains(&b.peer), "{found}");
    let peers = a.ok(&["peers"]);
    assert!(peers.contains(&b.peer), "{peers}");

    let file = tmp.path().join("f");
    std::fs::write(&file, b"found over mDNS").unwrap();
    let put = a.json(&["put", file.to_str().unwrap(), "--scheme", "hosting", "--json"]);
    assert_eq!(put["holders"], serde_json::json!([b.peer]), "{put}");
    let out = a.ok(&["get", put["cap"].as_str().unwrap(), "-o", "-"]);
    assert_eq!(out, "found over mDNS");
}

/// One piece per network (issue 19): identities crowded on one address cannot take more
/// than one of a file's pieces while other networks can. Six sites on networks of their
/// own (network namespaces, 10.78.i.2): the owner, four with one peer each, and one with
/// eight peers at one address. A `jewels:3/5` put places its five pieces one per network:
/// the crowd holds one, and losing that whole address loses one piece. A scheme with more
/// pieces than there are networks is placed, and the put says some share one.
#[test]
fn a_files_pieces_go_to_different_networks() {
    let _one = exclusive();
    let lab = Sites::new(6);
    let tmp = tempfile::tempdir().unwrap();
    let node = |site: usize, name: &str, boot: Option<&str>| {
        let mut b = Node::builder(&cli(), &tmp.path().join(name)).netns(&lab.ns[site]);
        if let Some(addr) = boot {
            b = b.bootstrap(addr);
        }
        let listen = Sites::listen(site);
        b.args(&[listen[0].as_str(), listen[1].as_str()]).start()
    };
    let first = node(1, "site1", None);
    let boot = first.addr.clone();
    let mut others: Vec<Node> = (2..5).map(|s| node(s, &format!("site{s}"), Some(&boot))).collect();
    let crowd: Vec<Node> = (0..8).map(|i| node(5, &format!("crowd{i}"), Some(&boot))).collect();
    let owner = node(0, "owner", Some(&boot));
    // The owner knows every storing peer before it puts.
    jewel_testkit::eventually("the owner knows all 12 peers", Duration::from_secs(60), || {
        let peers = owner.json(&["peers", "--json"]);
        let storing = peers.as_array()?.iter().filter(|p| p["blocks"] == true).count();
        (storing >= 12).then_some(())
    });
    let crowd_ids: Vec<&str> = crowd.iter().map(|n| n.peer.as_str()).collect();
    let file = tmp.path().join("f");
    std::fs::write(&file, jewel_testkit::random_bytes(300_000, 7)).unwrap();
    let out =
        owner.cli().run(&owner.home, &["put", file.to_str().unwrap(), "--scheme", "jewels:3/5", "--json"]);
    assert!(out.success(), "{}", out.stderr);
    let put: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let holders: Vec<&str> = put["holders"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    let on_crowd = holders.iter().filter(|h| crowd_ids.contains(h)).count();
    assert_eq!(on_crowd, 1, "pieces on the crowded address: {on_crowd} of {holders:?}");
    assert!(!out.stderr.contains("share a network"), "{}", out.stderr);
    // Seven pieces and five networks: two must share one, and the put says so.
    let out = owner.cli().run(&owner.home, &["put", file.to_str().unwrap(), "--scheme", "jewels:3/7"]);
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stderr.contains("note: 2 of its pieces share a network"), "{}", out.stderr);
    // The whole crowded address goes away: the file still reads back, from another site.
    drop(crowd);
    let reader = others.pop().unwrap();
    let got = tmp.path().join("got");
    let cap = put["cap"].as_str().unwrap();
    reader.ok(&["get", cap, "-o", got.to_str().unwrap()]);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&file).unwrap());
    drop((first, others, owner));
}
