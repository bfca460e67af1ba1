//! The user's index from the command line: `jewel put -r`, `ls`, `get PATH` and `get -r`,
//! `rm PATH`, `mv`, `share`, `name`. Paths and caps are both accepted wherever a file is
//! named; a path is resolved through the node's index (`/v1/ls`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use jewel::sync::Locked;

use anyhow::{bail, Context, Result};
use jewel_node::api::{self, LsEntry, LsRequest};

use crate::remote::Api;

/// Files put or got at once by `put -r` and `get -r`.
const PARALLEL: usize = 8;

/// Whether `target` names a cap rather than a path of the index.
pub fn is_cap(target: &str) -> bool {
    target.starts_with("jewel:")
}

/// The read cap `target` names: itself if it is a cap, else the file at that path of the
/// index (version `version`, 1 the newest, if given).
pub fn resolve(home: Option<&Path>, target: &str, version: Option<usize>) -> Result<String> {
    resolve_at(home, target, version, None)
}

/// [`resolve`], in the index as it was at `at` (Unix seconds), if given.
pub fn resolve_at(
    home: Option<&Path>,
    target: &str,
    version: Option<usize>,
    at: Option<u64>,
) -> Result<String> {
    if is_cap(target) {
        if version.is_some() || at.is_some() {
            bail!("--version and --at are for paths of your index, not caps");
        }
        return Ok(target.to_string());
    }
    let listed = Api::open(home)?.call::<api::Ls>(&LsRequest {
        target: target.to_string(),
        recursive: false,
        versions: version.is_some(),
        at,
    })?;
    if let Some(v) = version {
        let e = listed.entries.iter().find(|e| e.version == Some(v));
        return match e.and_then(|e| e.caps.first()) {
            Some(cap) => Ok(cap.clone()),
            None => bail!("`{target}` has {} versions; there is no version {v}", listed.entries.len()),
        };
    }
    match listed.entries.as_slice() {
        [e] if !e.folder && e.caps.len() == 1 => Ok(e.caps[0].clone()),
        [e] if !e.folder => bail!(
            "`{target}` has {} conflicting versions (changed on two devices at once); `jewel ls --versions {target}` lists them, and --version N picks one",
            e.caps.len()
        ),
        _ => bail!("`{target}` is a folder; give -r to act on the whole folder"),
    }
}

fn when(secs: u64) -> String {
    if secs == 0 {
        return "-".to_string();
    }
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", t / 3600, t / 60 % 60)
}

/// The date of a day since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A time as a user writes it: Unix seconds, or `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (or
/// with a `T`), in UTC.
pub fn parse_time(text: &str) -> Result<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().with_context(|| format!("`{text}` is not a time"));
    }
    let bad =
        || anyhow::anyhow!("`{text}` is not a time: give Unix seconds, or YYYY-MM-DD[ HH:MM[:SS]] (UTC)");
    let (date, clock) = match text.split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c.trim_end_matches('Z'))),
        None => (text, None),
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let ymd: Vec<&str> = date.split('-').collect();
    let [y, m, d] = ymd.as_slice() else { return Err(bad()) };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let hms: Vec<i64> = match clock {
        Some(c) => c.split(':').map(num).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let (h, mi, s) = match hms.as_slice() {
        [] => (0, 0, 0),
        [h, mi] => (*h, *mi, 0),
        [h, mi, s] => (*h, *mi, *s),
        _ => return Err(bad()),
    };
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&s) {
        return Err(bad());
    }
    let days = days_from_civil(y, m as u32, d as u32);
    if civil(days) != (y, m as u32, d as u32) {
        return Err(bad());
    }
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).map_err(|_| bad())
}

/// Days since 1970-01-01 of a date (the inverse of [`civil`], Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `jewel log PATH [--json]`.
pub fn log(home: Option<&Path>, path: &str, json: bool) -> Result<()> {
    let v = Api::open(home)?.call::<api::Log>(&api::LogRequest { path: path.to_string() })?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    for c in &v.changes {
        let what = match (&c.cap, c.purge) {
            (Some(cap), _) => format!("put {:>10}  {cap}", c.size),
            (None, true) => "removed, versions freed".to_string(),
            (None, false) => "removed".to_string(),
        };
        outln!("{}  device {:016x}  {what}", when(c.at), c.device);
    }
    Ok(())
}

/// `jewel ls [PATH|CAP] [-r] [--versions] [--at TIME] [--json]`.
pub fn ls(
    home: Option<&Path>,
    target: &str,
    recursive: bool,
    versions: bool,
    at: Option<u64>,
    json: bool,
) -> Result<()> {
    let api = Api::open(home)?;
    let v = api.call::<api::Ls>(&LsRequest { target: target.to_string(), recursive, versions, at })?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for e in &v.entries {
        let name = if e.path.is_empty() { target } else { &e.path };
        if e.folder {
            let files = if e.files == 1 { "1 file".to_string() } else { format!("{} files", e.files) };
            writeln!(out, "{:>12}  {:16}  {name}/  ({files})", e.size, "")?;
        } else if let Some(n) = e.version {
            let now = if e.live { "  (current)" } else { "" };
            writeln!(out, "{n:>3}  {:>12}  {:16}  {}{now}", e.size, when(e.mtime), e.caps.join(" "))?;
        } else if e.caps.len() > 1 {
            writeln!(
                out,
                "{:>12}  {:16}  {name}  CONFLICT: {} versions",
                e.size,
                when(e.mtime),
                e.caps.len()
            )?;
            for cap in &e.caps {
                writeln!(out, "{:>12}  {:16}    {cap}", "", "")?;
            }
        } else {
            writeln!(out, "{:>12}  {:16}  {name}", e.size, when(e.mtime))?;
        }
    }
    Ok(())
}

/// `jewel rm PATH [-r] [--purge]` (a cap goes to `remote::rm`).
pub fn rm(home: Option<&Path>, path: &str, recursive: bool, purge: bool) -> Result<()> {
    let api = Api::open(home)?;
    let v = api.call::<api::RmPath>(&api::RmPathRequest { path: path.to_string(), recursive, purge })?;
    crate::remote::publish_index(&api);
    for (p, _) in &v.paths {
        if purge {
            eprintln!("removed {p}, and freed its versions");
        } else {
            eprintln!("removed {p} (its versions are kept 30 days: `jewel undelete {p}` brings it back)");
        }
    }
    Ok(())
}

/// `jewel undelete PATH`.
pub fn undelete(home: Option<&Path>, path: &str) -> Result<()> {
    let api = Api::open(home)?;
    api.call::<api::Undelete>(&api::UndeleteRequest { path: path.to_string() })?;
    crate::remote::publish_index(&api);
    eprintln!("{path} is back");
    Ok(())
}

/// `jewel mv A B`.
pub fn mv(home: Option<&Path>, from: &str, to: &str) -> Result<()> {
    let api = Api::open(home)?;
    let v = api.call::<api::Mv>(&api::MvRequest { from: from.to_string(), to: to.to_string() })?;
    crate::remote::publish_index(&api);
    for (a, b) in &v.paths {
        eprintln!("moved {a} to {b}");
    }
    Ok(())
}

/// `jewel share PATH`: prints the read cap (for a folder, one that reads the subtree).
pub fn share(home: Option<&Path>, path: &str) -> Result<()> {
    let v = Api::open(home)?.call::<api::Share>(&api::ShareRequest { path: path.to_string() })?;
    outln!("{}", v.cap);
    if v.folder {
        eprintln!("a folder cap: `jewel ls CAP -r` lists it, `jewel get -r CAP -o DIR` fetches it");
    }
    Ok(())
}

pub fn name_publish(home: Option<&Path>, cap: &str, label: &str) -> Result<()> {
    let v = Api::open(home)?.call::<api::NamePublish>(&api::NamePublishRequest {
        cap: cap.to_string(),
        label: label.to_string(),
    })?;
    outln!("{}", v.name);
    Ok(())
}

pub fn name_resolve(home: Option<&Path>, name: &str) -> Result<()> {
    let v = Api::open(home)?.call::<api::NameResolve>(&api::NameResolveRequest { name: name.to_string() })?;
    outln!("{}", v.cap);
    Ok(())
}

/// A progress bar over `total` files on stderr, when it is a terminal.
fn files_bar(total: usize, label: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:32}] {pos}/{len} files {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// A file `put -r` stores: its path, index path, size, content hash, and whether it is a link.
struct Changed {
    /// Its place among the files walked (failures are told in that order).
    walked: usize,
    path: PathBuf,
    dest: String,
    size: u64,
    hash: String,
    link: bool,
}

/// A put of one file, or of a pack of small ones (by their places in the changed files).
enum Job {
    One(usize),
    Pack(Vec<usize>),
}

/// The bytes `put -r` gathers into one pack, about: big enough that a pack's put costs
/// little per file, small enough that a few packs go at once.
const PACK_TARGET: u64 = 8 << 20;
/// The files in one pack, at most.
const PACK_FILES: usize = 2048;

/// The puts of the changed files: files under [`api::PACK_FILE_MAX`] in packs of about
/// [`PACK_TARGET`] bytes or [`PACK_FILES`] files, each other file alone. (A pack of one
/// file is put as a pack all the same: its path is the same either way.)
fn batches(changed: &[Changed]) -> Vec<Job> {
    let (mut jobs, mut pack, mut bytes) = (Vec::new(), Vec::new(), 0);
    for (i, c) in changed.iter().enumerate() {
        if c.size >= api::PACK_FILE_MAX {
            jobs.push(Job::One(i));
            continue;
        }
        if !pack.is_empty() && (bytes + c.size > PACK_TARGET || pack.len() >= PACK_FILES) {
            jobs.push(Job::Pack(std::mem::take(&mut pack)));
            bytes = 0;
        }
        bytes += c.size;
        pack.push(i);
    }
    if !pack.is_empty() {
        jobs.push(Job::Pack(pack));
    }
    jobs
}

/// Runs `work` over `items` on [`PARALLEL`] threads; the failures, by item.
fn parallel<T: Sync>(items: &[T], work: impl Fn(&T) -> Result<()> + Sync) -> Vec<(usize, anyhow::Error)> {
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let Err(e) = work(item) {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push((i, e));
                }
            });
        }
    });
    let mut f = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    f.sort_by_key(|(i, _)| *i);
    f
}

fn mtime_of(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Files to put: each one's path, its index path below the folder put, and whether it is
/// a symbolic link (stored as its target, and made a link again by `get -r`).
type Files = Vec<(PathBuf, String, bool)>;

/// The file in a folder that lists, in gitignore syntax, what `put -r` leaves out of it.
pub const JEWELIGNORE: &str = ".jewelignore";

/// The regular files and links under `dir` (path, index path below `dir`, `/`-separated),
/// and what was left out, and why ([`Left`]). Links are not followed. What matches an
/// `exclude` pattern (gitignore syntax, relative to `dir`) or a `.jewelignore` in the tree
/// is not walked at all.
fn walk(dir: &Path, exclude: &[String]) -> Result<(Files, Vec<(Left, PathBuf)>)> {
    let mut patterns = ignore::gitignore::GitignoreBuilder::new(dir);
    for p in exclude {
        patterns.add_line(None, p).map_err(|e| anyhow::anyhow!("--exclude {p}: {e}"))?;
    }
    let patterns = patterns.build().map_err(|e| anyhow::anyhow!("--exclude: {e}"))?;
    let walker = ignore::WalkBuilder::new(dir)
        // Only what the user asked: hidden files are files, and .gitignore is git's.
        .standard_filters(false)
        .add_custom_ignore_filename(JEWELIGNORE)
        .follow_links(false)
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            e.depth() == 0 || !patterns.matched(e.path(), is_dir).is_ignore()
        })
        .build();
    let mut out = Vec::new();
    let mut left = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| anyhow::anyhow!("cannot read the folder: {e}"))?;
        if entry.depth() == 0 {
            continue;
        }
        let Some(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).ok().and_then(Path::to_str).map(|r| r.to_string());
        match rel {
            Some(rel) if kind.is_file() => out.push((entry.into_path(), rel, false)),
            Some(rel) if kind.is_symlink() => out.push((entry.into_path(), rel, true)),
            None => left.push((Left::Name, entry.into_path())),
            Some(_) => left.push((Left::Special, entry.into_path())),
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    left.sort();
    Ok((out, left))
}

/// Why `put -r` left a path out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Left {
    /// A device, socket or pipe: nothing a file's bytes can hold.
    Special,
    /// A name that is not UTF-8 (the index's paths are text).
    Name,
}

impl Left {
    fn what(self, n: usize) -> &'static str {
        match (self, n) {
            (Left::Special, 1) => "device, socket or pipe",
            (Left::Special, _) => "devices, sockets or pipes",
            (Left::Name, 1) => "path whose name is not UTF-8",
            (Left::Name, _) => "paths whose names are not UTF-8",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Left::Special => "special",
            Left::Name => "not_utf8",
        }
    }
}

/// One line per kind of what was left out, however many of each (a tree of thousands of
/// links said each on every run), with an example.
fn say_left(left: &[(Left, PathBuf)]) {
    for kind in [Left::Special, Left::Name] {
        let of: Vec<&PathBuf> = left.iter().filter(|(k, _)| *k == kind).map(|(_, p)| p).collect();
        if let Some(first) = of.first() {
            eprintln!("left out {} {}, e.g. {}", of.len(), kind.what(of.len()), first.display());
        }
    }
}

/// What was left out, as JSON: every path, and how many of each kind.
fn left_json(left: &[(Left, PathBuf)]) -> (serde_json::Value, serde_json::Value) {
    // Shown, not serialized as paths: a name that is not UTF-8 is one of them.
    let paths: Vec<String> = left.iter().map(|(_, p)| p.display().to_string()).collect();
    let mut kinds = serde_json::Map::new();
    for (kind, _) in left {
        let n = kinds.get(kind.key()).and_then(serde_json::Value::as_u64).unwrap_or(0);
        kinds.insert(kind.key().to_string(), (n + 1).into());
    }
    (paths.into(), kinds.into())
}

/// How `put -r` stores a folder: under which path and scheme, replacing or not, what it
/// leaves out, and whether it only says what it would do.
#[derive(Debug, Default)]
pub struct TreePut {
    pub at: Option<String>,
    pub scheme: Option<String>,
    pub no_clobber: bool,
    pub json: bool,
    /// Gitignore patterns to leave out (besides the tree's `.jewelignore` files).
    pub exclude: Vec<String>,
    /// List what would be stored; store nothing.
    pub dry_run: bool,
}

/// `jewel put -r DIR [--as PATH]`: every regular file under DIR, in parallel; a file whose
/// size, modification time and content hash match its entry is skipped.
pub fn put_tree(home: Option<&Path>, dir: &Path, how: &TreePut) -> Result<()> {
    let api = Api::open(home)?;
    let json = how.json;
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    if !std::fs::metadata(&dir).with_context(|| format!("cannot read {}", dir.display()))?.is_dir() {
        bail!("{} is not a folder; `jewel put FILE` stores one file", dir.display());
    }
    let root = match &how.at {
        Some(a) => jewel::index::normalize(a)?,
        None => dir.file_name().and_then(|n| n.to_str()).map(str::to_string).unwrap_or_default(),
    };
    let (files, left) = walk(&dir, &how.exclude)?;
    if !json {
        say_left(&left);
    }
    let known: HashMap<String, LsEntry> = match api.call::<api::Ls>(&LsRequest {
        target: root.clone(),
        recursive: true,
        versions: false,
        at: None,
    }) {
        Ok(v) => v.entries.into_iter().filter(|e| !e.folder).map(|e| (e.path.clone(), e)).collect(),
        Err(_) => HashMap::new(),
    };
    // First what changed (in parallel: each file is hashed), then the changed files: small
    // ones (and links) in packs of a few MiB, each pack one put and one index change; the
    // others one put each.
    let (skipped, would) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    let changed = Mutex::new(Vec::new());
    let walked: Vec<usize> = (0..files.len()).collect();
    let mut failed = parallel(&walked, |&walked| {
        let (path, rel, link) = &files[walked];
        let dest = jewel::index::join(&root, rel);
        // A link is its target: its content, and its own time (never the file it names).
        let (meta, hash, size, mode) = if *link {
            use std::os::unix::ffi::OsStrExt;
            let meta = std::fs::symlink_metadata(path)?;
            let target = std::fs::read_link(path)?;
            let bytes = target.as_os_str().as_bytes();
            (meta, blake3::hash(bytes).to_hex().to_string(), bytes.len() as u64, api::LINK_MODE)
        } else {
            let meta = std::fs::metadata(path)?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            let (hash, size) = (hash_file(path)?, meta.len());
            (meta, hash, size, mode)
        };
        // A mode the entry does not know (put by an older node) is not a change.
        let same = known.get(&dest).is_some_and(|e| {
            e.caps.len() == 1
                && e.size == size
                && e.mtime == mtime_of(&meta)
                && e.hash == hash
                && (e.mode == 0 || e.mode == mode)
        });
        if same {
            skipped.fetch_add(1, Ordering::Relaxed);
        } else if how.dry_run {
            would.locked().push(dest);
        } else {
            changed.locked().push(Changed { walked, path: path.clone(), dest, size, hash, link: *link });
        }
        Ok(())
    });
    let mut changed = changed.into_inner().unwrap_or_else(|p| p.into_inner());
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    let jobs = batches(&changed);
    let bar = files_bar(changed.len(), "put");
    let stored = AtomicUsize::new(0);
    let pack_failed = Mutex::new(Vec::new());
    let job_failed = parallel(&jobs, |job| {
        match job {
            Job::One(i) => {
                let c = &changed[*i];
                let req = api::PutRequest {
                    path: c.path.clone(),
                    scheme: how.scheme.clone(),
                    job: None,
                    at: Some(c.dest.clone()),
                    no_clobber: how.no_clobber,
                    hash: Some(c.hash.clone()),
                    link: c.link,
                    segment_size: None,
                };
                api.call::<api::Put>(&req).with_context(|| format!("{}", c.path.display()))?;
                stored.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
            Job::Pack(members) => {
                let files = members
                    .iter()
                    .map(|i| api::PackFile {
                        path: changed[*i].path.clone(),
                        at: changed[*i].dest.clone(),
                        link: changed[*i].link,
                    })
                    .collect();
                let req =
                    api::PutPackRequest { files, scheme: how.scheme.clone(), no_clobber: how.no_clobber };
                let done = api.call::<api::PutPack>(&req);
                bar.inc(members.len() as u64);
                let done = match done {
                    Ok(done) => done,
                    Err(e) => {
                        // The pack failed whole: each of its files did.
                        let why = format!("{e:#}");
                        pack_failed.locked().extend(
                            members
                                .iter()
                                .map(|i| (*i, anyhow::anyhow!("{}: {why}", changed[*i].path.display()))),
                        );
                        return Ok(());
                    }
                };
                stored.fetch_add(done.stored.len(), Ordering::Relaxed);
                let at: HashMap<&Path, usize> =
                    members.iter().map(|i| (changed[*i].path.as_path(), *i)).collect();
                for f in done.failed {
                    let i = at.get(f.file.as_path()).copied().unwrap_or(members[0]);
                    pack_failed.locked().push((i, anyhow::anyhow!("{}: {}", f.file.display(), f.error)));
                }
            }
        }
        Ok(())
    });
    // Failures by file, in the walk's order.
    let mut by_change: Vec<(usize, anyhow::Error)> =
        pack_failed.into_inner().unwrap_or_else(|p| p.into_inner());
    for (j, e) in job_failed {
        if let Job::One(i) = &jobs[j] {
            by_change.push((*i, e));
        }
    }
    failed.extend(by_change.into_iter().map(|(i, e)| (changed[i].walked, e)));
    failed.sort_by_key(|(i, _)| *i);
    bar.finish_and_clear();
    let (stored, skipped) = (stored.into_inner(), skipped.into_inner());
    if stored > 0 {
        crate::remote::publish_index(&api);
    }
    let shown = if root.is_empty() { "/".to_string() } else { root };
    let (left, left_kinds) = left_json(&left);
    if how.dry_run {
        let mut would = would.into_inner().unwrap_or_else(|p| p.into_inner());
        would.sort();
        if json {
            let failures = failures_json(&failed, |i| files[i].0.display().to_string());
            let v = serde_json::json!({
                "root": shown, "dry_run": true, "would_store": would, "unchanged": skipped,
                "failed": failures, "left_out": left, "left_out_by_kind": left_kinds
            });
            outln!("{v}");
        } else {
            for path in &would {
                outln!("{path}");
            }
            eprintln!(
                "would store {} files under {shown} ({skipped} unchanged); nothing was stored (--dry-run)",
                would.len()
            );
        }
    } else if json {
        let failures = failures_json(&failed, |i| files[i].0.display().to_string());
        let v = serde_json::json!({
            "root": shown, "stored": stored, "unchanged": skipped, "failed": failures, "left_out": left,
            "left_out_by_kind": left_kinds
        });
        outln!("{v}");
    } else {
        eprintln!("stored {stored} files under {shown} ({skipped} unchanged, skipped)");
    }
    if let Some((_, first)) = failed.first() {
        bail!("{} of {} files failed; the first: {first:#}", failed.len(), files.len());
    }
    Ok(())
}

/// The failures of a tree's files as JSON: each file's name (`name_of` its index) and why.
fn failures_json(failed: &[(usize, anyhow::Error)], name_of: impl Fn(usize) -> String) -> serde_json::Value {
    failed.iter().map(|(i, e)| serde_json::json!({"file": name_of(*i), "error": format!("{e:#}")})).collect()
}

/// The longest link target restored (Linux's `PATH_MAX`): an entry marked a link with more
/// is refused, not read into memory.
const MAX_LINK_TARGET: u64 = 4096;

/// Makes `at` a link to the target held in the file `held` (removed after). Something
/// already at `at` is replaced only with `force`, and only if it is not a folder. (The
/// link's own time is not restored: the standard library cannot set it.)
fn make_link(held: &Path, at: &Path, force: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let size = std::fs::metadata(held).map(|m| m.len());
    let target = match size {
        Ok(n) if n <= MAX_LINK_TARGET => std::fs::read(held),
        Ok(n) => {
            Err(std::io::Error::other(format!("a link's target of {n} bytes (at most {MAX_LINK_TARGET})")))
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(held);
    let target = target?;
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => bail!("{} is a folder", at.display()),
        Ok(_) if !force => bail!("{} exists; pass --force to replace it", at.display()),
        Ok(_) => std::fs::remove_file(at)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), at)?;
    Ok(())
}

/// A get of one file, or of packed files from one pack (its cap, and theirs in it).
enum GetJob {
    One(usize),
    Pack(String, Vec<(usize, jewel::caps::SliceCap)>),
}

/// The most bytes of a pack read at once for `get -r` (packs `put -r` makes are smaller).
const PACK_SPAN: u64 = 64 << 20;

/// Restores packed files (`members`: their places in `files`, and their slices of `pack`)
/// from one read of the span of the pack they fill, each checked against its hash; the
/// files that failed, and why.
fn get_packed(
    api: &Api,
    out: &Path,
    pack: &str,
    members: &[(usize, jewel::caps::SliceCap)],
    files: &[(PathBuf, String, u64, u32)],
    force: bool,
) -> Vec<(usize, anyhow::Error)> {
    let start = members.iter().map(|(_, s)| s.offset).min().unwrap_or(0);
    let end = members.iter().map(|(_, s)| s.offset + s.len).max().unwrap_or(0);
    let held =
        out.join(format!(".jewel-pack-{start}-{}.part", &blake3::hash(pack.as_bytes()).to_hex()[..16]));
    let req = api::GetRequest {
        cap: pack.to_string(),
        out: held.clone(),
        range: Some((start, end)),
        job: None,
        force: true,
    };
    let read = api.call::<api::Get>(&req).and_then(|_| Ok(std::fs::read(&held)?));
    let _ = std::fs::remove_file(&held);
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            let why = format!("{e:#}");
            return members
                .iter()
                .map(|(i, _)| (*i, anyhow::anyhow!("{}: {why}", files[*i].0.display())))
                .collect();
        }
    };
    let mut failed = Vec::new();
    for (i, s) in members {
        let (rel, _, mtime, mode) = &files[*i];
        let from = usize::try_from(s.offset - start).unwrap_or(usize::MAX);
        let slice = bytes.get(from..).and_then(|b| b.get(..usize::try_from(s.len).unwrap_or(usize::MAX)));
        let written = match slice {
            Some(b) if *blake3::hash(b).as_bytes() == s.hash => {
                write_restored(out, rel, b, force).and_then(|at| restore_metadata(&at, *mtime, *mode))
            }
            Some(_) => Err(anyhow::anyhow!("the packed file does not match its hash: nothing was written")),
            None => Err(anyhow::anyhow!("its pack is shorter than its cap says")),
        };
        if let Err(e) = written {
            failed.push((*i, e.context(rel.display().to_string())));
        }
    }
    failed
}

/// Writes a restored file at `rel` under `out` (through a hidden file beside it, renamed):
/// never through a link, never over a folder, over a file only with `force`.
fn write_restored(out: &Path, rel: &Path, bytes: &[u8], force: bool) -> Result<PathBuf> {
    make_parents(out, rel)?;
    let at = out.join(rel);
    match std::fs::symlink_metadata(&at) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a link; nothing was written through it", at.display())
        }
        Ok(m) if m.is_dir() => bail!("{} is a folder", at.display()),
        Ok(_) if !force => bail!("{} exists; pass --force to replace it", at.display()),
        _ => {}
    }
    let name = at.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let part = at.with_file_name(format!(".{name}.jewel-part"));
    std::fs::write(&part, bytes).with_context(|| format!("cannot write {}", part.display()))?;
    std::fs::rename(&part, &at).with_context(|| format!("cannot write {}", at.display()))?;
    Ok(at)
}

/// Gives a file just fetched its modification time (Unix seconds) and permission bits, where
/// known (0: not known, left as written): a private file comes back private.
fn restore_metadata(path: &Path, mtime: u64, mode: u32) -> Result<()> {
    if mtime > 0 {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_modified(at)
            .with_context(|| format!("cannot set the modification time of {}", path.display()))?;
    }
    if mode != 0 {
        let perms = std::os::unix::fs::PermissionsExt::from_mode(mode & 0o777);
        std::fs::set_permissions(path, perms)
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    Ok(())
}

/// Checks that `rel` (a path from the index or a shared folder) stays inside the output
/// folder: plain components only.
fn inside(rel: &str) -> Result<PathBuf> {
    let canonical = jewel::index::normalize(rel)?;
    let p = PathBuf::from(&canonical);
    if canonical.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("refused to write `{rel}`: it would not be inside the output folder");
    }
    Ok(p)
}

/// Makes the folders of `rel` under `out`, refusing to go through a link.
fn make_parents(out: &Path, rel: &Path) -> Result<()> {
    let mut at = out.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            if let Err(e) = std::fs::create_dir(&at) {
                // Made already (by another of the parallel gets, say): fine if it is a real
                // folder, never a link.
                let is_dir = std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir());
                if e.kind() != std::io::ErrorKind::AlreadyExists || !is_dir {
                    bail!("{} cannot be made a folder ({e}); nothing was written there", at.display());
                }
            }
        }
    }
    Ok(())
}

/// `jewel get -r PATH|CAP -o DIR`: every file of a folder of the index, or of a shared
/// folder's cap, into DIR (made if absent), never outside it.
pub fn get_tree(
    home: Option<&Path>,
    target: &str,
    out: &Path,
    force: bool,
    json: bool,
    at: Option<u64>,
) -> Result<()> {
    let api = Api::open(home)?;
    if is_cap(target) && at.is_some() {
        bail!("--at is for paths of your index, not caps");
    }
    let listed =
        api.call::<api::Ls>(&LsRequest { target: target.to_string(), recursive: true, versions: false, at })?;
    let prefix = if is_cap(target) { String::new() } else { jewel::index::normalize(target)? };
    if let [e] = listed.entries.as_slice() {
        if !e.folder && (e.path == prefix || e.path.is_empty()) {
            bail!("`{target}` is a file; `jewel get {target} -o FILE` fetches it");
        }
    }
    let files: Vec<(PathBuf, String, u64, u32)> = listed
        .entries
        .into_iter()
        .filter(|e| !e.folder)
        .map(|e| {
            let rel = if prefix.is_empty() {
                e.path.clone()
            } else {
                e.path[prefix.len()..].trim_start_matches('/').to_string()
            };
            if e.caps.len() > 1 {
                eprintln!(
                    "{}: {} conflicting versions; got the newest (`jewel ls --versions` lists all)",
                    e.path,
                    e.caps.len()
                );
            }
            if api::is_link(e.mode) && e.size > MAX_LINK_TARGET {
                bail!("`{}` is marked a link, but its target would be {} bytes", e.path, e.size);
            }
            Ok((inside(&rel)?, e.caps.last().cloned().unwrap_or_default(), e.mtime, e.mode))
        })
        .collect::<Result<_>>()?;
    if files.is_empty() {
        bail!("`{target}` is not a folder (or an empty one); `jewel get {target} -o FILE` fetches a file");
    }
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} exists and is not a folder", out.display()),
        Err(_) => std::fs::create_dir_all(out).with_context(|| format!("cannot make {}", out.display()))?,
    }
    let out = if out.is_absolute() { out.to_path_buf() } else { std::env::current_dir()?.join(out) };
    let bar = files_bar(files.len(), "get");
    // Files first, links last: no file is ever written through a link the restore made
    // (and a link is a file of the index, so no path lies below one). Packed files are
    // fetched a pack at a time: one read of the span of the pack they fill.
    let (links, regular): (Vec<usize>, Vec<usize>) =
        (0..files.len()).partition(|i| api::is_link(files[*i].3));
    let mut jobs = Vec::new();
    let mut by_pack: BTreeMap<String, Vec<(usize, jewel::caps::SliceCap)>> = BTreeMap::new();
    for i in regular {
        match jewel::caps::Cap::parse(&files[i].1) {
            Ok(jewel::caps::Cap::Slice(s)) => {
                by_pack.entry(jewel::caps::Cap::Read(s.pack.clone()).to_string()).or_default().push((i, s))
            }
            _ => jobs.push(GetJob::One(i)),
        }
    }
    for (pack, mut members) in by_pack {
        members.sort_by_key(|(_, s)| s.offset);
        let mut part: Vec<(usize, jewel::caps::SliceCap)> = Vec::new();
        for m in members {
            let start = part.first().map_or(m.1.offset, |(_, s)| s.offset);
            if !part.is_empty() && (m.1.offset + m.1.len).saturating_sub(start) > PACK_SPAN {
                jobs.push(GetJob::Pack(pack.clone(), std::mem::take(&mut part)));
            }
            part.push(m);
        }
        jobs.push(GetJob::Pack(pack, part));
    }
    let failures = Mutex::new(Vec::new());
    let fetch_one = |i: usize| -> Result<()> {
        let (rel, cap, mtime, mode) = &files[i];
        make_parents(&out, rel)?;
        let at = out.join(rel);
        if api::is_link(*mode) {
            // The target comes into a file beside it, then becomes the link.
            let name = at.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let held = at.with_file_name(format!(".{name}.jewel-link"));
            let req =
                api::GetRequest { cap: cap.clone(), out: held.clone(), range: None, job: None, force: true };
            api.call::<api::Get>(&req).with_context(|| rel.display().to_string())?;
            make_link(&held, &at, force).with_context(|| rel.display().to_string())?;
        } else {
            let req = api::GetRequest { cap: cap.clone(), out: at.clone(), range: None, job: None, force };
            api.call::<api::Get>(&req).with_context(|| rel.display().to_string())?;
            restore_metadata(&at, *mtime, *mode).with_context(|| rel.display().to_string())?;
        }
        Ok(())
    };
    let _ = parallel(&jobs, |job| {
        match job {
            GetJob::One(i) => {
                if let Err(e) = fetch_one(*i) {
                    failures.locked().push((*i, e));
                }
                bar.inc(1);
            }
            GetJob::Pack(pack, members) => {
                let failed = get_packed(&api, &out, pack, members, &files, force);
                bar.inc(members.len() as u64);
                failures.locked().extend(failed);
            }
        }
        Ok(())
    });
    let _ = parallel(&links, |i| {
        if let Err(e) = fetch_one(*i) {
            failures.locked().push((*i, e));
        }
        bar.inc(1);
        Ok(())
    });
    let mut failed = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_by_key(|(i, _)| *i);
    bar.finish_and_clear();
    let got = files.len() - failed.len();
    if json {
        let failures = failures_json(&failed, |i| files[i].0.display().to_string());
        let v = serde_json::json!({"out": out.display().to_string(), "got": got, "failed": failures});
        outln!("{v}");
    } else {
        eprintln!("got {got} files into {}", out.display());
    }
    if let Some((_, first)) = failed.first() {
        bail!("{} of {} files failed; the first: {first:#}", failed.len(), files.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restored link: made from its target; something in the way replaced only with
    /// --force, a folder never; a "target" longer than any path is refused, not read.
    #[test]
    fn links_are_made_from_their_targets_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (held, at) = (dir.path().join(".l.jewel-link"), dir.path().join("l"));
        std::fs::write(&held, "a/b").unwrap();
        make_link(&held, &at, false).unwrap();
        assert_eq!(std::fs::read_link(&at).unwrap(), Path::new("a/b"));
        assert!(!held.exists(), "the held target is removed");
        std::fs::write(&held, "c").unwrap();
        assert!(make_link(&held, &at, false).is_err(), "in the way, without --force");
        std::fs::write(&held, "c").unwrap();
        make_link(&held, &at, true).unwrap();
        assert_eq!(std::fs::read_link(&at).unwrap(), Path::new("c"));
        std::fs::write(&held, vec![b'x'; MAX_LINK_TARGET as usize + 1]).unwrap();
        let e = make_link(&held, &dir.path().join("big"), false).unwrap_err();
        assert!(format!("{e:#}").contains("at most 4096"), "{e:#}");
        assert!(!held.exists() && !dir.path().join("big").exists());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(&held, "c").unwrap();
        assert!(make_link(&held, &dir.path().join("d"), true).is_err(), "a folder is never replaced");
    }

    #[test]
    fn times_are_read_as_users_write_them() {
        assert_eq!(parse_time("1796162400").unwrap(), 1_796_162_400);
        assert_eq!(parse_time("2026-12-01 22:00").unwrap(), 1_796_162_400);
        assert_eq!(parse_time("2026-12-01T22:00:00Z").unwrap(), 1_796_162_400);
        assert_eq!(parse_time("2000-02-29").unwrap(), 951_782_400);
        for bad in ["", "yesterday", "2026-13-01", "2026-02-30", "2026-12-01 25:00", "1969-12-31", "2026-12"]
        {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_read_as_a_calendar_says_them() {
        assert_eq!(when(0), "-");
        assert_eq!(when(1_796_162_400), "2026-12-01 22:00");
        assert_eq!(when(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn output_paths_stay_inside_the_folder() {
        assert_eq!(inside("a/b").unwrap(), PathBuf::from("a/b"));
        for bad in ["../x", "a/../../x", "", "a//b"] {
            assert!(inside(bad).is_err(), "{bad}");
        }
    }
}
