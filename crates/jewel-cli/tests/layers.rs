//! The crate map's "must never" list, checked: the engine pulls in no async runtime,
//! network stack or web framework; the network layer knows no manifests, keys, caps or
//! pipelines; the codec depends on no other crate of ours.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

/// The host's target triple, as `rustc -vV` prints it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let o = Command::new(rustc).arg("-vV").output().unwrap();
    assert!(o.status.success(), "rustc -vV: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().trim().to_string()
}

/// The workspace's metadata for this host's platform only: `--offline` without the filter
/// resolves every platform, and so needs crates (Windows consoles, say) that a build here
/// never downloaded, which a fresh cargo cache does not hold.
fn metadata() -> serde_json::Value {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let host = host_triple();
    let o = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The names of every package `name` depends on, directly or not, for normal builds.
fn closure(meta: &serde_json::Value, name: &str) -> BTreeSet<String> {
    let packages: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let start = packages.iter().find(|(_, n)| **n == name).map(|(id, _)| *id).unwrap();
    let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
    while let Some(id) = todo.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(packages[dep].to_string()) {
                todo.push(dep);
            }
        }
    }
    seen
}

#[test]
fn the_engine_needs_no_runtime_network_or_web_framework() {
    let meta = metadata();
    let deps = closure(&meta, "jewel");
    let bad: Vec<&String> =
        deps.iter().filter(|d| *d == "tokio" || d.starts_with("libp2p") || *d == "axum").collect();
    assert!(bad.is_empty(), "jewel depends on {bad:?}");
    // The check sees what it should: the node does pull them in.
    let node = closure(&meta, "jewel-node");
    assert!(node.contains("tokio") && node.contains("libp2p") && node.contains("axum"));
}

#[test]
fn the_codec_depends_on_no_other_crate_of_ours() {
    let deps = closure(&metadata(), "jewel-codec");
    let ours: Vec<&String> = deps.iter().filter(|d| d.starts_with("jewel")).collect();
    assert!(ours.is_empty(), "jewel-codec depends on {ours:?}");
}

#[test]
fn the_network_knows_no_manifests_keys_caps_or_pipelines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jewel-net/src");
    let forbidden = [
        "jewel::pipeline",
        "jewel::manifest",
        "jewel::crypto",
        "jewel::caps",
        "jewel::Manifest",
        "jewel::ReadCap",
        "jewel::VerifyCap",
        "jewel::Cap",
        "jewel::FileKey",
        "jewel::CipherId",
        "jewel::PutOptions",
        "jewel::offline",
        "jewel::{",
    ];
    let mut files = vec![src];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        seen += 1;
        for f in forbidden {
            assert!(!text.contains(f), "{} names {f}", p.display());
        }
    }
    assert!(seen >= 8, "only {seen} source files of jewel-net were read");
}
