//! A sequential file writer that bypasses the page cache (`O_DIRECT`) where it can.
//!
//! A get writes a whole file once and does not read it back. Through the page cache every
//! byte is copied into freshly allocated cache pages, and on this project's VMs (and many
//! cloud machines, whose hosts reclaim a guest's free memory) first touching those pages
//! costs about 1 CPU-second per GiB: over a third of the owner's CPU in a 1 GiB get. With
//! `O_DIRECT` the disk reads our one reused, aligned buffer instead (0.1 CPU-s per GiB).
//!
//! Writes are staged in a 4 KiB-aligned buffer and written out in aligned 1 MiB blocks;
//! the unaligned tail is written through a second, ordinary handle at the end. Where the
//! file system refuses `O_DIRECT` (tmpfs, some network file systems), or the start offset
//! is unaligned, it writes through the page cache like a `BufWriter`.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Direct I/O alignment of offsets, lengths and buffer addresses.
const ALIGN: usize = 4096;
/// Bytes staged before a write.
const STAGE: usize = 1 << 20;

/// Writes a file from `offset` on; call [`DirectWriter::finish`] to write the rest.
pub struct DirectWriter {
    path: PathBuf,
    /// Opened with `O_DIRECT` if `direct`, else an ordinary handle.
    file: File,
    direct: bool,
    /// `STAGE + ALIGN` bytes; the stage is the aligned `STAGE` bytes at `start`.
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// File offset of the stage's first byte.
    offset: u64,
}

impl DirectWriter {
    /// Opens `path` (which must exist; it is not truncated) for writing from `offset`.
    pub fn open(path: &Path, offset: u64) -> io::Result<DirectWriter> {
        let direct = offset.is_multiple_of(ALIGN as u64).then(|| open_direct(path)).and_then(Result::ok);
        let (file, direct) = match direct {
            Some(f) => (f, true),
            None => (File::options().write(true).custom_flags(O_NOFOLLOW).open(path)?, false),
        };
        let buf = vec![0u8; STAGE + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Ok(DirectWriter { path: path.to_path_buf(), file, direct, buf, start, len: 0, offset })
    }

    /// Writes out the full stage.
    fn spill(&mut self) -> io::Result<()> {
        let stage = &self.buf[self.start..self.start + self.len];
        match self.file.write_all_at(stage, self.offset) {
            Ok(()) => {}
            // Refused at the first write by some file systems: carry on through the cache.
            Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => {
                self.file = File::options().write(true).open(&self.path)?;
                self.direct = false;
                self.file.write_all_at(stage, self.offset)?;
            }
            Err(e) => return Err(e),
        }
        self.offset += self.len as u64;
        self.len = 0;
        Ok(())
    }

    /// Writes what is staged (its aligned part directly, the tail through the page cache)
    /// and returns an ordinary handle to the file, for `sync_all`.
    pub fn finish(mut self) -> io::Result<File> {
        let aligned = self.len - self.len % ALIGN;
        let tail = self.len - aligned;
        if aligned > 0 {
            self.len = aligned;
            self.spill()?;
        }
        let file = File::options().write(true).open(&self.path)?;
        let from = self.start + aligned;
        file.write_all_at(&self.buf[from..from + tail], self.offset)?;
        Ok(file)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(STAGE - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == STAGE {
            self.spill()?;
        }
        Ok(n)
    }

    /// Staged bytes stay staged (a direct write must be whole aligned blocks); see
    /// [`DirectWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `EINVAL`: what `O_DIRECT` opens and writes fail with where it is not supported.
const EINVAL: i32 = 22;

fn open_direct(path: &Path) -> io::Result<File> {
    File::options().write(true).custom_flags(O_DIRECT | O_NOFOLLOW).open(path)
}

/// Opening a path whose last component is a symbolic link fails (ELOOP) instead of
/// following it: files beside a user's output are never written through a planted link.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_NOFOLLOW: i32 = 0o400000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
pub const O_NOFOLLOW: i32 = 0o400000;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const O_DIRECT: i32 = 0o40000;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
const O_DIRECT: i32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Every length around the stage and alignment boundaries, written in odd pieces, from
    /// an aligned and an unaligned offset, reads back exactly.
    #[test]
    fn writes_exact_bytes_at_every_boundary() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4096, 4097, STAGE - 1, STAGE, STAGE + 1, 2 * STAGE + 12_345] {
            for offset in [0u64, 8192, 1000] {
                let path = dir.path().join(format!("f{len}-{offset}"));
                std::fs::write(&path, vec![7u8; offset as usize]).unwrap();
                let data = bytes(len);
                let mut w = DirectWriter::open(&path, offset).unwrap();
                if offset % ALIGN as u64 != 0 {
                    assert!(!w.direct, "an unaligned start goes through the page cache");
                }
                for piece in data.chunks(7_777) {
                    w.write_all(piece).unwrap();
                }
                w.finish().unwrap().sync_all().unwrap();
                let got = std::fs::read(&path).unwrap();
                assert_eq!(got.len(), offset as usize + len, "len {len} offset {offset}");
                assert!(got[..offset as usize].iter().all(|b| *b == 7), "the bytes before the offset stay");
                assert!(got[offset as usize..] == data[..], "len {len} offset {offset}");
            }
        }
    }
}
