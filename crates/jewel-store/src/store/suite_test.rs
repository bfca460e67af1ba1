//! One suite, run over both stores.

use super::*;
use crate::id::BlockId;

type Corrupt = Box<dyn Fn(&BlockId, u64)>;

fn fs_store(capacity: Option<u64>) -> (Box<dyn BlockStore>, Corrupt, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), capacity).unwrap();
    let s2 = store.clone();
    let corrupt: Corrupt = Box::new(move |id, at| {
        let path = s2.data_path(id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(&path, bytes).unwrap();
    });
    (Box::new(store), corrupt, dir)
}

fn mem_store(capacity: Option<u64>) -> (Box<dyn BlockStore>, Corrupt, tempfile::TempDir) {
    let store = MemStore::new(capacity);
    let s2 = store.clone();
    let corrupt: Corrupt = Box::new(move |id, at| {
        assert!(s2.tamper(id, |d| d[at as usize] ^= 0x5a));
    });
    (Box::new(store), corrupt, tempfile::tempdir().unwrap())
}

type Make = fn(Option<u64>) -> (Box<dyn BlockStore>, Corrupt, tempfile::TempDir);
const STORES: [(&str, Make); 2] = [("fs", fs_store), ("mem", mem_store)];

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn put_get_ranges_and_dedup() {
    for (name, make) in STORES {
        let (store, _, _dir) = make(None);
        for len in [0usize, 1, 16 * 1024, 100_003] {
            let data = bytes(len, 1);
            let id = store.put(&data).unwrap();
            assert_eq!(id, BlockId::of(&data), "{name}");
            assert!(store.has(&id).unwrap());
            assert_eq!(store.get(&id).unwrap(), data, "{name}");
            let r = store.reader(&id).unwrap();
            assert_eq!(r.len(), len as u64);
            if len > 10 {
                let mut buf = vec![0u8; len / 3];
                r.read_at(len as u64 / 2, &mut buf).unwrap();
                assert_eq!(buf, data[len / 2..len / 2 + len / 3]);
                let err = r.read_at(len as u64 - 1, &mut [0u8; 2]).unwrap_err();
                assert!(matches!(err, StoreError::OutOfRange { .. }), "{name}");
            }
        }
        // Same bytes, same id, stored once.
        let before = store.usage().used;
        store.put(&bytes(100_003, 1)).unwrap();
        assert_eq!(store.usage().used, before, "{name}: dedup");
        assert_eq!(store.list().unwrap().len(), 4, "{name}");
    }
}

#[test]
fn streamed_writes_check_the_expected_id() {
    for (name, make) in STORES {
        let (store, _, _dir) = make(None);
        let data = bytes(50_000, 2);
        let mut w = store.writer().unwrap();
        for chunk in data.chunks(7_000) {
            w.write(chunk).unwrap();
        }
        assert_eq!(w.written(), 50_000);
        let id = w.commit(Some(BlockId::of(&data))).unwrap();
        assert_eq!(store.get(&id).unwrap(), data);

        let mut w = store.writer().unwrap();
        w.write(b"not what was promised").unwrap();
        let err = w.commit(Some(BlockId::of(b"something else"))).unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{name}: {err}");
        assert!(!store.has(&BlockId::of(b"not what was promised")).unwrap(), "{name}");

        // A dropped writer leaves nothing behind and releases its reservation.
        let used = store.usage().used;
        let mut w = store.writer().unwrap();
        w.write(&bytes(10_000, 3)).unwrap();
        drop(w);
        assert_eq!(store.usage().used, used, "{name}");
        assert_eq!(store.list().unwrap().len(), 1, "{name}");
    }
}

#[test]
fn corruption_is_detected_never_returned() {
    for (name, make) in STORES {
        let (store, corrupt, _dir) = make(None);
        let data = bytes(200_000, 4);
        let id = store.put(&data).unwrap();
        corrupt(&id, 150_000);
        let err = store.get(&id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { id: bad, .. } if bad == id), "{name}: {err}");
        // Ranges in other chunk groups still verify on their own.
        let r = store.reader(&id).unwrap();
        let mut buf = vec![0u8; 1000];
        r.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, data[..1000]);
        let err = r.read_at(149_990, &mut buf[..20]).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { id: bad, .. } if bad == id), "{name}: {err}");
        // Storing the block again heals it.
        store.put(&data).unwrap();
        assert_eq!(store.get(&id).unwrap(), data, "{name}");
    }
}

#[test]
fn capacity_is_enforced_with_a_clear_error() {
    for (name, make) in STORES {
        let (store, _, _dir) = make(Some(100_000));
        store.put(&bytes(60_000, 5)).unwrap();
        let err = store.put(&bytes(60_000, 6)).unwrap_err();
        assert!(matches!(err, StoreError::Full { capacity: 100_000, .. }), "{name}: {err}");
        assert!(err.to_string().contains("store is full"), "{name}");
        assert_eq!(store.list().unwrap().len(), 1, "{name}: nothing partial");
        let (id, _) = store.list().unwrap()[0];
        assert!(store.remove(&id).unwrap());
        assert!(!store.remove(&id).unwrap());
        store.put(&bytes(60_000, 6)).unwrap();
    }
}

#[test]
fn missing_blocks_are_not_found() {
    for (name, make) in STORES {
        let (store, _, _dir) = make(None);
        let id = BlockId::of(b"absent");
        assert!(!store.has(&id).unwrap());
        assert!(matches!(store.reader(&id), Err(StoreError::NotFound(_))), "{name}");
    }
}

#[test]
fn fs_store_survives_reopen_and_cleans_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(30_000, 7);
    let id = {
        let store = FsStore::open(dir.path(), None).unwrap();
        let mut w = store.writer().unwrap();
        w.write(b"half").unwrap();
        std::mem::forget(w); // a crash mid-write: the temp file stays
        store.put(&data).unwrap()
    };
    let store = FsStore::open(dir.path(), None).unwrap();
    assert_eq!(store.get(&id).unwrap(), data);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(store.usage().used, 30_000 + outboard_len(30_000));
    // A truncated data file is corrupt, not a short read.
    let path = store.data_path(&id);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(20_000).unwrap();
    assert!(matches!(store.get(&id), Err(StoreError::Corrupt { .. })));
}

#[test]
fn disk_full_is_recognised() {
    let e = std::io::Error::from_raw_os_error(28);
    assert!(matches!(StoreError::io("/x", e), StoreError::DiskFull { .. }));
    assert!(StoreError::io("/x", std::io::Error::other("boom")).to_string().contains("boom"));
}

/// A fragment served from memory is the verified fragment, byte for byte; out of range or
/// over a corrupt chunk group, the memory path declines (the blocking path then reports).
#[test]
fn fragments_from_memory_match_or_decline() {
    for (name, make) in STORES {
        let (store, corrupt, _dir) = make(None);
        let data = bytes(300_000, 9);
        let id = store.put(&data).unwrap();
        assert_eq!(store.get(&id).unwrap(), data); // now in the page cache, for fs
        let r = store.reader(&id).unwrap();
        let mut want = Vec::new();
        r.fragment(20_001, 150_000, &mut want).unwrap();
        let mut got = vec![0xee; 1 << 20];
        let cached = r.fragment_cached(20_001, 150_000, &mut got);
        if cfg!(target_os = "linux") || name == "mem" {
            assert!(cached, "{name}: a block just read is in memory");
            assert!(got == want, "{name}: the fragment from memory differs");
        }
        assert!(!r.fragment_cached(299_000, 2_000, &mut got), "{name}: out of range");
        corrupt(&id, 100_000);
        store.get(&id).unwrap_err(); // reads the corrupt bytes into the cache again
        let r = store.reader(&id).unwrap();
        assert!(!r.fragment_cached(90_000, 20_000, &mut got), "{name}: over a corrupt group");
        assert!(matches!(r.fragment(90_000, 20_000, &mut got), Err(StoreError::Corrupt { .. })));
    }
}
