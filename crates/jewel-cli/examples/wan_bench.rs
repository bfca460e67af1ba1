//! Issue 20's connectivity benchmark in the WAN lab (needs root): 2 public relay nodes and
//! HOMES homes behind routers (30% UPnP, 50% cone, 20% symmetric by default), every node
//! started as a user starts one (homes: `--join INVITE` only). Then every home puts a file
//! (`jewels:3/5`) and gets another home's. Prints, as one JSON object:
//! - puts and gets that succeeded;
//! - of the home pairs connected at the end, how many are direct (mapped or hole-punched),
//!   split into pairs with at least one non-symmetric side and pairs of two symmetric ones;
//! - the share of the homes' sent bytes that went into the relays (the relays store
//!   nothing: `--capacity 0`, so what they receive is DHT traffic and relayed data);
//! - the time from one home's `jewel join` of another (cone) home's invite to the first
//!   connection, and to a direct one.
//!
//! `cargo run --release -p jewel-cli --example wan_bench -- [HOMES] [FILE_BYTES]`

use std::process::Command;
use std::time::{Duration, Instant};

use jewel_testkit::{eventually, random_bytes, write_file, Cli, Node, Router, Wan};

fn bytes_of(ns: &str, dev: &str, field: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/{field}");
    let o = Command::new("ip").args(["netns", "exec", ns, "cat", &path]).output().expect("ip netns exec");
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let homes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 20);
    if let Err(why) = Wan::available(true) {
        eprintln!("{why}");
        std::process::exit(2);
    }
    let kinds: Vec<Router> = (0..homes)
        .map(|i| match i % 10 {
            0..=2 => Router::Upnp,
            3..=7 => Router::Cone,
            _ => Router::Symmetric,
        })
        .collect();
    let bin = std::env::var("JEWEL_BIN").unwrap_or_else(|_| "target/release/jewel".into());
    let cli = Cli::new(&bin);
    let lab = Wan::new(2, &kinds);
    let dir = tempfile::tempdir().expect("tempdir");
    // The relays store nothing by default (what they receive is then relay traffic);
    // JEWEL_RELAY_CAPACITY lets them store too.
    let capacity = std::env::var("JEWEL_RELAY_CAPACITY").unwrap_or_else(|_| "0".into());
    let relay0 = Node::builder(&cli, &dir.path().join("relay-0"))
        .netns(&lab.publics[0].ns)
        .args(&["--relay-server", "--capacity", &capacity])
        .start();
    let invite = relay0.ok(&["invite"]).trim().to_string();
    let _relay1 = Node::builder(&cli, &dir.path().join("relay-1"))
        .netns(&lab.publics[1].ns)
        .args(&["--relay-server", "--capacity", &capacity, "--join", &invite])
        .start();
    let started = Instant::now();
    let nodes: Vec<Node> = (0..homes)
        .map(|h| {
            Node::builder(&cli, &dir.path().join(format!("home-{h}")))
                .netns(&lab.homes[h].host.ns)
                .args(&["--join", &invite])
                .start()
        })
        .collect();
    for n in &nodes {
        eventually("reachable (mapped or relayed)", Duration::from_secs(60), || {
            let s = n.ok(&["status"]);
            (s.contains("relayed through") || s.contains("port-mapped")).then_some(())
        });
    }
    let ready = started.elapsed();
    let sent_before: u64 = lab.homes.iter().map(|h| bytes_of(&h.router_ns, "wan", "tx_bytes")).sum();
    let relay_before: u64 = lab.publics.iter().map(|p| bytes_of(&p.ns, "eth0", "rx_bytes")).sum();
    let (mut puts, mut gets) = (0, 0);
    let mut caps = Vec::new();
    let t = Instant::now();
    for (h, n) in nodes.iter().enumerate() {
        let file = dir.path().join(format!("f{h}"));
        write_file(&file, &random_bytes(size, h as u64));
        let one = Instant::now();
        let o = n.run(&["put", file.to_str().unwrap_or(""), "--scheme", "jewels:3/5", "--json"]);
        eprintln!("put from home {h} ({:?}): {:.2} s", kinds[h], one.elapsed().as_secs_f64());
        let cap = serde_json::from_str::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v["cap"].as_str().map(str::to_string));
        if o.success() && cap.is_some() {
            puts += 1;
        } else {
            eprintln!("put from home {h} failed: {}", o.stderr.trim());
        }
        caps.push(cap);
    }
    let put_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for h in 0..homes {
        let Some(cap) = &caps[(h + 1) % homes] else { continue };
        let out = dir.path().join(format!("g{h}"));
        let o = nodes[h].run(&["get", cap, "-o", out.to_str().unwrap_or("")]);
        if o.success()
            && std::fs::read(&out).map(|b| b == random_bytes(size, ((h + 1) % homes) as u64)).unwrap_or(false)
        {
            gets += 1;
        } else {
            eprintln!("get on home {h} failed: {}", o.stderr.trim());
        }
    }
    let get_secs = t.elapsed().as_secs_f64();
    let sent: u64 =
        lab.homes.iter().map(|h| bytes_of(&h.router_ns, "wan", "tx_bytes")).sum::<u64>() - sent_before;
    let relayed: u64 =
        lab.publics.iter().map(|p| bytes_of(&p.ns, "eth0", "rx_bytes")).sum::<u64>() - relay_before;
    // Pairs of homes connected now, and how.
    let ids: Vec<&str> = nodes.iter().map(|n| n.peer.as_str()).collect();
    let (mut mixed, mut mixed_direct, mut both_sym, mut both_sym_direct) = (0, 0, 0, 0);
    for (h, n) in nodes.iter().enumerate() {
        let v = n.json(&["peers", "--json"]);
        for p in v.as_array().into_iter().flatten() {
            let Some(other) = ids.iter().position(|id| p["peer"].as_str() == Some(*id)) else { continue };
            if other <= h || p["connected"] != true {
                continue;
            }
            let direct = p["path"] != "relayed";
            if kinds[h] == Router::Symmetric && kinds[other] == Router::Symmetric {
                both_sym += 1;
                both_sym_direct += direct as usize;
            } else {
                mixed += 1;
                mixed_direct += direct as usize;
            }
        }
    }
    // A first connection to a home behind a cone NAT, from another home, through its invite.
    let cone = kinds.iter().position(|k| *k == Router::Cone).unwrap_or(0);
    let from = kinds.iter().rposition(|k| *k == Router::Cone).unwrap_or(1);
    let its = nodes[cone].ok(&["invite"]).trim().to_string();
    let t = Instant::now();
    let joined = nodes[from].run(&["join", &its]).success();
    let first = t.elapsed().as_secs_f64();
    let mut direct_after = None;
    while t.elapsed() < Duration::from_secs(30) && direct_after.is_none() {
        let v = nodes[from].json(&["peers", "--json"]);
        let direct = v.as_array().into_iter().flatten().any(|p| {
            p["peer"] == nodes[cone].peer.as_str() && p["connected"] == true && p["path"] != "relayed"
        });
        if direct {
            direct_after = Some(t.elapsed().as_secs_f64());
        }
    }
    let report = serde_json::json!({
        "homes": homes,
        "kinds": {"upnp": kinds.iter().filter(|k| **k == Router::Upnp).count(),
                  "cone": kinds.iter().filter(|k| **k == Router::Cone).count(),
                  "symmetric": kinds.iter().filter(|k| **k == Router::Symmetric).count()},
        "relays": 2,
        "file_bytes": size,
        "ready_secs": ready.as_secs_f64(),
        "puts_ok": puts, "gets_ok": gets, "put_secs": put_secs, "get_secs": get_secs,
        "pairs_with_a_non_symmetric_side": mixed, "of_them_direct": mixed_direct,
        "direct_share": if mixed > 0 { mixed_direct as f64 / mixed as f64 } else { 0.0 },
        "pairs_both_symmetric": both_sym, "of_them_direct_sym": both_sym_direct,
        "home_bytes_sent": sent, "relay_bytes_received": relayed,
        "relay_share": if sent > 0 { relayed as f64 / sent as f64 } else { 0.0 },
        "first_connection_secs": first, "joined": joined, "direct_after_secs": direct_after,
    });
    println!("{report}");
}
