//! Issue 20's throughput benchmark in the WAN lab (needs root). Public holders with home-like
//! uplinks (5/20/50/100/500 Mbit/s in the proportions 15/35/25/15/10%, scaled by SCALE to
//! fit this machine, ratios kept) and round-trip times of 20–200 ms to the getter (the lab's
//! delay line), and one node that puts and gets (its uplink and downlink shaped too).
//! Prints, as one JSON object per run:
//! - the put: file bytes per second against the putter's uplink × k/n;
//! - the get: bytes per second against T* over the file's holders' uplinks, capped by the
//!   getter's downlink (`jewel::policy::t_star`);
//! - the same get with its fastest holder throttled to 1% of its rate one second in, against
//!   the unthrottled time.
//!
//! `target/release/examples/wan_speed [HOLDERS] [FILE_MIB] [SCALE] [SCHEME]`
//! (defaults: 20 holders, 64 MiB, 0.2, jewels:3/5); `JEWEL_BIN` names the binary.

use std::time::{Duration, Instant};

use jewel_testkit::delay::Line;
use jewel_testkit::{random_bytes, write_file, Cli, Node, Wan};

/// Mbit/s of the holders' uplinks, in the proportions (per 20 holders).
const MIX: [(f64, usize); 5] = [(5.0, 3), (20.0, 7), (50.0, 5), (100.0, 3), (500.0, 2)];
/// The getter's downlink and the putter's uplink, Mbit/s (before SCALE).
const GETTER_DOWN: f64 = 500.0;
const PUTTER_UP: f64 = 100.0;

fn rate(mbit: f64) -> String {
    format!("{}kbit", (mbit * 1000.0).round() as u64)
}

/// A process's peak resident memory (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let holders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let scale: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.2);
    let scheme = args.next().unwrap_or_else(|| "jewels:3/5".into());
    let k: usize = scheme.split([':', '/']).nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let n: usize = scheme.split('/').nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    if let Err(why) = Wan::available(false) {
        eprintln!("{why}");
        std::process::exit(2);
    }
    let bin = std::env::var("JEWEL_BIN").unwrap_or_else(|_| "target/release/jewel".into());
    let cli = Cli::new(&bin);
    // Public host 0: the getter; 1..=holders: the holders.
    let mut lab = Wan::new(holders + 1, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut uplinks = Vec::new(); // Mbit/s, scaled, per holder
    for (mbit, count) in MIX {
        uplinks.extend(std::iter::repeat_n(mbit * scale, count * holders / 20));
    }
    uplinks.resize(holders, 20.0 * scale);
    let ms = Duration::from_millis;
    // One-way delays: the getter 5 ms, holders 5–95 ms, so round trips of 20–200 ms.
    let mut lines = vec![(lab.publics[0].addr.clone(), Line { delay: ms(5), loss: 0.0 })];
    for h in 0..holders {
        let d = 5 + (90 * h / holders.max(2).saturating_sub(1)) as u64;
        lines.push((lab.publics[h + 1].addr.clone(), Line { delay: ms(d), loss: 0.0 }));
    }
    let lines_ref: Vec<(&str, Line)> = lines.iter().map(|(a, l)| (a.as_str(), *l)).collect();
    lab.delays(&lines_ref);
    for (h, up) in uplinks.iter().enumerate() {
        lab.shape(&lab.publics[h + 1].ns, "eth0", &rate(*up));
    }
    lab.shape(&lab.publics[0].ns, "eth0", &rate(PUTTER_UP * scale));
    lab.shape_down(0, &rate(GETTER_DOWN * scale));
    let me = Node::builder(&cli, &dir.path().join("me")).netns(&lab.publics[0].ns).start();
    let invite = me.ok(&["invite"]).trim().to_string();
    let nodes: Vec<Node> = (0..holders)
        .map(|h| {
            Node::builder(&cli, &dir.path().join(format!("holder-{h}")))
                .netns(&lab.publics[h + 1].ns)
                .args(&["--join", &invite])
                .start()
        })
        .collect();
    let ids: Vec<&str> = nodes.iter().map(|n| n.peer.as_str()).collect();
    me.wait_knows(&ids);
    let uplink_of = |peer: &str| nodes.iter().position(|n| n.peer == peer).map(|h| uplinks[h]);
    let size = mib << 20;
    let file = dir.path().join("f");
    for run in 0..2 {
        write_file(&file, &random_bytes(size, run));
        let t = Instant::now();
        let put = me.json(&["put", file.to_str().expect("path"), "--scheme", &scheme, "--json"]);
        let put_secs = t.elapsed().as_secs_f64();
        let cap = put["cap"].as_str().expect("cap").to_string();
        let holders_of: Vec<String> = put["holders"]
            .as_array()
            .expect("holders")
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect();
        let ups: Vec<f64> = holders_of.iter().filter_map(|p| uplink_of(p)).collect();
        let t_star = jewel::policy::t_star(&ups, k, Some(GETTER_DOWN * scale));
        let get = |throttle: bool| -> f64 {
            let out = dir.path().join("got");
            let _ = std::fs::remove_file(&out);
            let fastest = holders_of
                .iter()
                .filter_map(|p| nodes.iter().position(|x| x.peer == *p))
                .max_by(|a, b| uplinks[*a].total_cmp(&uplinks[*b]));
            let t = Instant::now();
            let (lab, uplinks) = (&lab, &uplinks);
            std::thread::scope(|s| {
                if let (true, Some(h)) = (throttle, fastest) {
                    s.spawn(move || {
                        std::thread::sleep(Duration::from_secs(1));
                        lab.shape(&lab.publics[h + 1].ns, "eth0", &rate((uplinks[h] / 100.0).max(0.1)));
                    });
                }
                me.ok(&["get", &cap, "-o", out.to_str().expect("path")]);
            });
            let secs = t.elapsed().as_secs_f64();
            if let Some(h) = fastest {
                lab.shape(&lab.publics[h + 1].ns, "eth0", &rate(uplinks[h]));
            }
            assert_eq!(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0), size as u64, "the get's bytes");
            secs
        };
        let plain = get(false);
        let throttled = get(true);
        let mbit = |bytes: f64, secs: f64| bytes * 8.0 / secs / 1e6;
        println!(
            "{}",
            serde_json::json!({
                "run": run,
                "scheme": scheme,
                "file_mib": mib,
                "scale": scale,
                "holders_uplinks_mbit": ups,
                "put_mbit": mbit(size as f64, put_secs),
                "put_target_mbit": PUTTER_UP * scale * k as f64 / n as f64,
                "get_mbit": mbit(size as f64, plain),
                "t_star_mbit": t_star,
                "get_share_of_t_star": mbit(size as f64, plain) / t_star,
                "get_secs": plain,
                "throttled_get_secs": throttled,
                "throttled_ratio": throttled / plain,
                "getter_peak_rss_mib": peak_rss_mib(me.pid()),
            })
        );
    }
}
