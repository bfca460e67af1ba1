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

/// The network layer knows no manifests, keys, caps or pipelines: it depends on the
/// store crate (ids, stores, leases, name records' format), never on the engine, so the
/// compiler refuses any use of them.
#[test]
fn the_network_knows_no_manifests_keys_caps_or_pipelines() {
    let meta = metadata();
    let deps = closure(&meta, "jewel-net");
    assert!(deps.contains("jewel-store"), "the check sees jewel-net's dependencies: {deps:?}");
    assert!(!deps.contains("jewel"), "jewel-net depends on the engine (jewel)");
    let store = closure(&meta, "jewel-store");
    let ours: Vec<&String> = store.iter().filter(|d| d.starts_with("jewel")).collect();
    assert!(ours.is_empty(), "jewel-store depends on {ours:?}");
}

/// Every line of library code (before any `#[cfg(test)]`) of the `.rs` files under
/// `dir`, outside `tests` folders: (file, line number, line).
fn library_lines(dir: &Path) -> Vec<(std::path::PathBuf, usize, String)> {
    let mut todo = vec![dir.to_path_buf()];
    let mut out = Vec::new();
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "tests" && name != "target" {
                    todo.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let library = text.split("#[cfg(test)]").next().unwrap_or("");
                for (i, line) in library.lines().enumerate() {
                    out.push((path.clone(), i + 1, line.to_string()));
                }
            }
        }
    }
    out
}

/// No lock is skipped when poisoned (`lock().ok()`, `if let Ok(..) = x.lock()`): library
/// code takes locks with `jewel::sync::Locked::locked` (or recovers the guard itself), so a
/// panic elsewhere cannot leave a repair marked busy forever or lift a per-peer limit.
#[test]
fn no_library_code_skips_a_poisoned_lock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for (path, n, line) in library_lines(&root) {
        let skips = line.contains(".lock().ok()")
            || line.contains(".lock().map(")
            || (line.contains("let Ok(") && line.contains(".lock()"))
            || (line.contains("match ") && line.contains(".lock()") && !line.contains(".await"))
            || line.contains(".read().ok()")
            || line.contains(".write().ok()");
        if skips {
            found.push(format!("{}:{n}: {}", path.display(), line.trim()));
        }
    }
    assert!(found.is_empty(), "locks skipped when poisoned:\n{}", found.join("\n"));
}

/// The node's state store is written by its one writer thread only (issue 21): no write
/// transaction, and so no fsync, runs on an async worker thread, and the leases of the
/// blocks a node holds (`jewel-store`'s `LeaseBook`, in the same database) go through the
/// same writer. Every other piece of the node hands the writer a change and waits for it.
#[test]
fn the_node_state_is_written_by_its_writer_thread_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut lines = library_lines(&root.join("jewel-node/src"));
    lines.extend(library_lines(&root.join("jewel-store/src")));
    lines.extend(library_lines(&root.join("jewel-net/src")));
    let writes: Vec<String> = lines
        .iter()
        .filter(|(_, _, l)| l.contains("begin_write("))
        .map(|(p, n, l)| format!("{}:{n}: {}", p.display(), l.trim()))
        .collect();
    assert!(!writes.is_empty(), "the scan found the writer's own transaction");
    let elsewhere: Vec<&String> =
        writes.iter().filter(|w| !w.contains("jewel-store/src/writer.rs:")).collect();
    assert!(elsewhere.is_empty(), "write transactions outside the database's writer:\n{elsewhere:#?}");
}

/// The index service knows the node's files and network only through its two traits
/// (`IndexFiles`, `IndexNet`): outside its glue, no line of it names the node, its block
/// client or the network's handle.
#[test]
fn the_index_service_knows_files_and_network_only_through_its_traits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jewel-node/src/index");
    let lines = library_lines(&dir);
    assert!(lines.iter().any(|(p, _, _)| p.ends_with("mod.rs")), "the scan found the service");
    let named: Vec<String> = lines
        .iter()
        .filter(|(p, _, _)| !p.ends_with("glue.rs") && !p.ends_with("tests.rs"))
        .filter(|(_, _, l)| {
            ["Node", "NetHandle", "blocks", "put_input"].iter().any(|w| {
                l.match_indices(w).any(|(i, _)| {
                    let before = l[..i].chars().next_back();
                    let after = l[i + w.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        })
        .map(|(p, n, l)| format!("{}:{n}: {}", p.display(), l.trim()))
        .collect();
    assert!(named.is_empty(), "the index service reaches past its traits:\n{named:#?}");
}
