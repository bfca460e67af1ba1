//! Offline mode: encode a file into one folder per peer slot, and decode it back from
//! whichever folders remain, the way par2 and zfec work on local disks.
//!
//! `DIR/peer-i` is a block store holding slot i's piece and a copy of the manifest;
//! `DIR/manifest` is one more copy. Outputs are written to a temp path beside the target
//! and renamed into place only when complete, so a failure leaves nothing partial.

use std::fs::{self, File};
use std::io::{BufWriter, Write};

use crate::direct::DirectWriter;
use std::path::{Path, PathBuf};

use crate::caps::ReadCap;
use crate::id::BlockId;
use crate::manifest::{Manifest, ManifestError};
use crate::pipeline::{get, put, GetStats, PipelineError, PutOptions, PutStats};
use crate::store::{BlockReader, BlockStore, BlockWriter, FsStore, StoreError};

/// Why an offline encode or decode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    #[error("cannot read {path}: {source}")]
    InputUnreadable { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("output folder {path} already exists and is not empty; choose a new folder")]
    OutputExists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    OutputUnwritable { path: PathBuf, source: std::io::Error },
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("{path} holds no peer folders (peer-0, peer-1, …)")]
    NoPeerFolders { path: PathBuf },
    #[error("manifest {id} was not found intact in {path}; the folder belongs to another file, or every copy is damaged")]
    ManifestNotFound { id: String, path: PathBuf },
    #[error("manifest is unreadable: {0}")]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unwritable(path: &Path, source: std::io::Error) -> OfflineError {
    if crate::store::is_disk_full(&source) {
        OfflineError::DiskFull { path: path.to_path_buf() }
    } else {
        OfflineError::OutputUnwritable { path: path.to_path_buf(), source }
    }
}

/// A temp path beside `target`: `.NAME.partial-RANDOM`.
fn partial_path(target: &Path) -> PathBuf {
    let mut b = [0u8; 6];
    let _ = getrandom::getrandom(&mut b);
    let suffix: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    target.with_file_name(format!(".{name}.partial-{suffix}"))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) {
    // Best effort: some file systems refuse fsync on directories.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The name of slot `i`'s folder.
pub fn peer_dir(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("peer-{slot}"))
}

/// What an offline encode produced.
#[derive(Debug)]
pub struct EncodeReport {
    pub cap: ReadCap,
    pub manifest: Manifest,
    pub stats: PutStats,
}

/// Encodes `input` into `out_dir/peer-*` with the options' scheme.
pub fn encode_file(input: &Path, opts: &PutOptions, out_dir: &Path) -> Result<EncodeReport, OfflineError> {
    let unreadable = |source| OfflineError::InputUnreadable { path: input.to_path_buf(), source };
    let mut file = File::open(input).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(OfflineError::NotAFile { path: input.to_path_buf() });
    }
    if out_dir.exists() {
        let empty =
            out_dir.is_dir() && fs::read_dir(out_dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            return Err(OfflineError::OutputExists { path: out_dir.to_path_buf() });
        }
    }
    let tmp = partial_path(out_dir);
    fs::create_dir(&tmp).map_err(|e| unwritable(&tmp, e))?;
    let result = encode_into(&mut file, opts, &tmp);
    let finish = result.and_then(|report| {
        sync_dir(&tmp);
        fs::rename(&tmp, out_dir).map_err(|e| unwritable(out_dir, e))?;
        sync_dir(&parent_of(out_dir));
        Ok(report)
    });
    if finish.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    finish
}

fn encode_into(file: &mut File, opts: &PutOptions, dir: &Path) -> Result<EncodeReport, OfflineError> {
    let slots = jewel_codec::build(&opts.scheme).map_err(PipelineError::from)?.slots();
    let stores = (0..slots).map(|i| FsStore::open(peer_dir(dir, i), None)).collect::<Result<Vec<_>, _>>()?;
    let sinks = stores.iter().map(|s| s.writer()).collect::<Result<Vec<Box<dyn BlockWriter>>, _>>()?;
    let done = put(file, opts, sinks)?;
    for store in &stores {
        store.put(&done.manifest_bytes)?;
    }
    let mpath = dir.join("manifest");
    let mut f = File::create(&mpath).map_err(|e| unwritable(&mpath, e))?;
    f.write_all(&done.manifest_bytes).and_then(|_| f.sync_all()).map_err(|e| unwritable(&mpath, e))?;
    Ok(EncodeReport { cap: done.cap, manifest: done.manifest, stats: done.stats })
}

/// Where a decode writes.
#[derive(Clone, Debug)]
pub enum Output {
    Path(PathBuf),
    Stdout,
}

/// Finds the peer stores in `dir`, in slot order where names say so.
fn peer_stores(dir: &Path) -> Result<Vec<(Option<usize>, FsStore)>, OfflineError> {
    let entries = fs::read_dir(dir)
        .map_err(|source| OfflineError::InputUnreadable { path: dir.to_path_buf(), source })?;
    let mut stores = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || !FsStore::is_store(&path) {
            continue;
        }
        let slot =
            entry.file_name().to_str().and_then(|n| n.strip_prefix("peer-")).and_then(|n| n.parse().ok());
        stores.push((slot, FsStore::open_read_only(&path)));
    }
    stores.sort_by_key(|(slot, _)| *slot);
    if stores.is_empty() {
        return Err(OfflineError::NoPeerFolders { path: dir.to_path_buf() });
    }
    Ok(stores)
}

/// Reads the manifest `id` from any intact copy in `dir`.
fn find_manifest(
    dir: &Path,
    stores: &[(Option<usize>, FsStore)],
    id: &BlockId,
) -> Result<Manifest, OfflineError> {
    let from_stores = stores.iter().find_map(|(_, s)| s.get(id).ok());
    let bytes = from_stores.or_else(|| fs::read(dir.join("manifest")).ok().filter(|b| BlockId::of(b) == *id));
    let bytes = bytes
        .ok_or_else(|| OfflineError::ManifestNotFound { id: id.to_string(), path: dir.to_path_buf() })?;
    Ok(Manifest::decode(&bytes)?)
}

/// Opens the best source for every slot: the slot's own folder first, then any folder
/// holding the same block (content addressing makes them interchangeable).
fn open_sources(
    manifest: &Manifest,
    stores: &[(Option<usize>, FsStore)],
) -> Vec<Option<Box<dyn BlockReader>>> {
    manifest
        .pieces
        .iter()
        .enumerate()
        .map(|(slot, piece)| {
            let own = stores.iter().filter(|(s, _)| *s == Some(slot));
            let others = stores.iter().filter(|(s, _)| *s != Some(slot));
            own.chain(others).find_map(|(_, store)| store.reader(piece).ok())
        })
        .collect()
}

/// Rebuilds the file behind `cap` from the peer folders left in `dir`.
pub fn decode_dir(
    cap: &ReadCap,
    dir: &Path,
    output: &Output,
    threads: usize,
) -> Result<GetStats, OfflineError> {
    let stores = peer_stores(dir)?;
    let manifest = find_manifest(dir, &stores, &cap.manifest)?;
    manifest.check_key(&cap.key)?;
    let sources = open_sources(&manifest, &stores);
    match output {
        Output::Stdout => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
            Ok(get(&manifest, &cap.key, sources, &mut w, threads)?)
        }
        Output::Path(target) => {
            if target.is_dir() {
                return Err(OfflineError::OutputExists { path: target.clone() });
            }
            write_atomically(target, |w| Ok(get(&manifest, &cap.key, sources, w, threads)?))
        }
    }
}

/// Writes `target` through `write`, into a temp file beside it that is fsynced and renamed
/// into place only on success; on any error the temp file is removed and `target` is
/// untouched. Used by offline decode and by the node's network get.
pub fn write_atomically<T, E: From<OfflineError>>(
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = partial_path(target);
    File::options().write(true).create_new(true).open(&tmp).map_err(|e| unwritable(&tmp, e))?;
    let result = DirectWriter::open(&tmp, 0).map_err(|e| unwritable(&tmp, e).into()).and_then(|mut w| {
        let value = write(&mut w)?;
        let file = w.finish().map_err(|e| unwritable(target, e))?;
        file.sync_all().map_err(|e| unwritable(target, e))?;
        fs::rename(&tmp, target).map_err(|e| unwritable(target, e))?;
        sync_dir(&parent_of(target));
        Ok(value)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The fixed name of a resumable download's partial file: beside `target`, hidden, and
/// tagged (with the manifest id) so a part of another file is never resumed into this one.
pub fn resumable_path(target: &Path, tag: &str) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    target.with_file_name(format!(".{name}.{tag}.jewel-part"))
}

/// Where a resumable download records what it wrote: a keyed hash of each whole segment
/// of its part file, in order, so a resume trusts only the segments that still verify.
fn sums_path(target: &Path, tag: &str) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    target.with_file_name(format!(".{name}.{tag}.jewel-sums"))
}

/// Opens `path` for reading and writing (made if `create`) without following a link, and
/// checks that it is a regular file with no other name (a hard link to another file).
fn open_private(path: &Path, create: bool) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = File::options()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(crate::direct::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(40) {
                std::io::Error::other("it is a symbolic link: refusing to write through it")
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.file_type().is_file() || m.nlink() != 1 {
        return Err(std::io::Error::other("it is not a plain file of one name: refusing to write to it"));
    }
    Ok(f)
}

/// The offset a [`get_resumable`] into `target` would resume from, at most: the last whole
/// segment of its part file (segments that no longer verify are fetched again).
pub fn resume_offset(target: &Path, manifest: &Manifest) -> u64 {
    let have = fs::metadata(resumable_path(target, &resume_tag(manifest))).map(|m| m.len()).unwrap_or(0);
    have - have % u64::from(manifest.segment_size).max(1)
}

/// The key of a part file's segment hashes: derived from the file's key, so that nobody
/// without it can write sums that a damaged part would match.
fn sums_key(key: &crate::crypto::FileKey) -> [u8; 32] {
    blake3::derive_key("jewel resumable part segment sums v1", &key.0)
}

/// How many whole `unit`s at the start of `part` match the hashes in `sums`.
fn verified_units(part: &mut File, sums: &[u8], unit: u64, key: &[u8; 32]) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let whole = part.metadata()?.len() / unit.max(1);
    let recorded = (sums.len() / 32) as u64;
    part.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..whole.min(recorded) {
        let mut hasher = blake3::Hasher::new_keyed(key);
        let mut left = unit;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            part.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        let at = (i * 32) as usize;
        if hasher.finalize().as_bytes()[..] != sums[at..at + 32] {
            return Ok(i);
        }
    }
    Ok(whole.min(recorded))
}

/// A writer that hashes what passes through it, one `unit` at a time, and appends each
/// whole unit's keyed hash to the sums file.
struct Summed<'a> {
    inner: &'a mut dyn Write,
    unit: u64,
    filled: u64,
    key: [u8; 32],
    hasher: blake3::Hasher,
    sums: File,
}

impl Write for Summed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (self.unit - self.filled).min(buf.len() as u64) as usize;
        let n = self.inner.write(&buf[..room])?;
        self.hasher.update(&buf[..n]);
        self.filled += n as u64;
        if self.filled == self.unit {
            let done = std::mem::replace(&mut self.hasher, blake3::Hasher::new_keyed(&self.key));
            self.sums.write_all(done.finalize().as_bytes())?;
            self.filled = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn resume_tag(manifest: &Manifest) -> String {
    let id = BlockId::of(&manifest.encode()).to_string();
    id[..16].to_string()
}

/// Gets a whole file into `target`, resumably: an interrupted get (a failure, or the
/// process stopped) leaves a hidden part file beside `target` ([`resumable_path`]), and the
/// next call for the same manifest continues from its last whole segment. Returns the
/// stats and the offset it resumed from.
pub fn get_resumable(
    target: &Path,
    manifest: &Manifest,
    key: &crate::crypto::FileKey,
    fetch: &dyn crate::pipeline::Fetch,
    threads: usize,
) -> Result<(GetStats, u64), OfflineError> {
    let unit = u64::from(manifest.segment_size);
    write_resumable(target, &resume_tag(manifest), unit, sums_key(key), |from, w| {
        let range = crate::pipeline::ByteRange { start: from, end: u64::MAX };
        Ok(crate::pipeline::get_with(manifest, key, fetch, range, w, threads)?)
    })
}

/// Like [`write_atomically`], but resumable: the partial file has a fixed name
/// ([`resumable_path`]) and is kept when `write` fails or the process is stopped, with a
/// keyed hash of each whole `unit` (segment) written beside it. A later call checks the
/// part's units against those hashes and continues after the last one that verifies (a
/// unit cut short, damaged, or never hashed is written again): `write` gets the offset to
/// start from and a writer that appends there. Returns what `write` returned and that
/// offset.
fn write_resumable<T, E: From<OfflineError>>(
    target: &Path,
    tag: &str,
    unit: u64,
    sum_key: [u8; 32],
    write: impl FnOnce(u64, &mut dyn Write) -> Result<T, E>,
) -> Result<(T, u64), E> {
    let unit = unit.max(1);
    let (part, sums) = (resumable_path(target, tag), sums_path(target, tag));
    // Their names are predictable (anyone who holds a piece knows the manifest id): each
    // is opened without following a link, and must be a plain file of one name, so a link
    // planted at either name never makes a get write, or cut short, another file.
    let mut file = open_private(&part, true).map_err(|e| unwritable(&part, e))?;
    let recorded = match open_private(&sums, false) {
        Ok(mut f) => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b).map_err(|e| unwritable(&sums, e))?;
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(unwritable(&sums, e).into()),
    };
    let units = verified_units(&mut file, &recorded, unit, &sum_key).map_err(|e| unwritable(&part, e))?;
    let from = units * unit;
    file.set_len(from).map_err(|e| unwritable(&part, e))?;
    drop(file);
    let sums_file = open_private(&sums, true).map_err(|e| unwritable(&sums, e))?;
    sums_file.set_len(units * 32).map_err(|e| unwritable(&sums, e))?;
    let mut sums_file = sums_file;
    std::io::Seek::seek(&mut sums_file, std::io::SeekFrom::End(0)).map_err(|e| unwritable(&sums, e))?;
    let mut w = DirectWriter::open(&part, from).map_err(|e| unwritable(&part, e))?;
    let written = {
        let hasher = blake3::Hasher::new_keyed(&sum_key);
        let mut summed = Summed { inner: &mut w, unit, filled: 0, key: sum_key, hasher, sums: sums_file };
        write(from, &mut summed)
    };
    let file = w.finish().map_err(|e| unwritable(&part, e));
    if written.is_err() && fs::metadata(&part).map(|m| m.len() == 0).unwrap_or(false) {
        let _ = fs::remove_file(&part); // nothing worth resuming
        let _ = fs::remove_file(&sums);
    }
    let value = written?;
    let file = file?;
    file.sync_all().map_err(|e| unwritable(target, e))?;
    fs::rename(&part, target).map_err(|e| unwritable(target, e))?;
    let _ = fs::remove_file(&sums);
    sync_dir(&parent_of(target));
    Ok((value, from))
}
