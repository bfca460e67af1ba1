//! Issue 21's idle target: a node holding BLOCKS blocks (half of them manifests, which it
//! announces, and half pieces, which it does not), started among 4 peers on 127.0.0.1 as a
//! restart after a long time off (no announcement state: it announces its manifests once).
//! Prints its resident memory and the CPU time it used, from its start, every minute for
//! MINUTES minutes, and how long the store's open and the API took to come up.
//!
//! `target/release/examples/idle_holder [BLOCKS] [MINUTES]` (defaults: 100 000, 5);
//! `JEWEL_BIN` names the binary (default `target/release/jewel`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jewel::store::{BlockStore, FsStore};
use jewel_testkit::{random_bytes, Devnet, Node};

/// A process's resident memory (VmRSS) and CPU seconds so far (user + system).
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks.max(1.0);
    (rss_kib / 1024.0, cpu)
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let blocks = args.first().copied().unwrap_or(100_000);
    let minutes = args.get(1).copied().unwrap_or(5);
    let bin = PathBuf::from(std::env::var("JEWEL_BIN").unwrap_or_else(|_| "target/release/jewel".into()));
    let net = Devnet::start(&bin, 4, |_| Vec::new());
    let home = net.dir.path().join("holder");
    let t = Instant::now();
    {
        let store = FsStore::open(home.join("store"), None).expect("store");
        let noise = random_bytes(1 << 20, 21);
        for i in 0..blocks as usize {
            // Distinct blocks of 1 KiB: every other one a manifest (its magic bytes first).
            let mut b = Vec::with_capacity(1040);
            if i % 2 == 0 {
                b.extend_from_slice(b"JWLM");
            }
            b.extend_from_slice(&(i as u64).to_be_bytes());
            let at = (i * 7919) % (noise.len() - 1024);
            b.extend_from_slice(&noise[at..at + 1024]);
            store.put(&b).expect("put");
        }
    }
    println!("{blocks} blocks written in {:.0} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let node = Node::builder(&net.cli, &home).bootstrap(&net.hub.addr).start();
    println!("node up (API answering) in {:.1} s", t.elapsed().as_secs_f64());
    let pid = node.pid();
    let (rss, cpu) = usage(pid);
    println!("at start: {rss:.0} MiB resident, {cpu:.1} s of CPU");
    for m in 1..=minutes {
        std::thread::sleep(Duration::from_secs(60));
        let (rss, cpu) = usage(pid);
        println!("after {m} min: {rss:.0} MiB resident, {cpu:.1} s of CPU");
    }
    let (_, last) = usage(pid);
    let status = node.json(&["status", "--json"]);
    println!("CPU over the run: {last:.1} s; store usage: {}", status["usage"]);
}
