//! The index's bookkeeping in typed tables: this device's head (what it published last),
//! the highest sequence number merged of each record, the folder nodes stored, and the
//! names the user published. (The index's ops themselves are in `index_ops`.)
//!
//! Layout 1 kept all of this in one string-keyed table of byte values (`index_meta`:
//! "head/seq", "seen/HEX", "dag/HEX", a newline-joined "names"); [`migrate_meta`] moves it
//! over, in the transaction that sets layout 2.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Durability, Pending, StateError, StateStore, META};

/// This device's head, one row: (sequence number, ops it held, its snapshot's cap, the cap
/// of the one before, the signed record of this device's slot, that of the latest slot).
type HeadRow<'a> = (u64, u64, Option<&'a str>, Option<&'a str>, &'a [u8], &'a [u8]);
const HEAD: TableDefinition<(), HeadRow> = TableDefinition::new("index_head");
/// BLAKE3 of a name record's DHT key → the highest sequence number merged (or resolved)
/// from it: a lower one is a replay.
const SEEN: TableDefinition<[u8; 32], u64> = TableDefinition::new("index_seen");
/// BLAKE3 of a folder node's bytes → the cap it was stored under (shares reuse them).
const FOLDER_NODES: TableDefinition<[u8; 32], &str> = TableDefinition::new("index_folder_nodes");
/// A name's label → its signed record, as published (republished every half hour).
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("index_names");
/// The order ops came in: a counter → the op's id (clock, device). What this device has
/// not published yet is what came after its last publication.
const ORDER: TableDefinition<u64, (u64, u64)> = TableDefinition::new("index_order");
/// This device's chain of publications since its last checkpoint, one row (JSON of
/// [`Chain`]).
const CHAIN: TableDefinition<(), &[u8]> = TableDefinition::new("index_chain");
/// This device's id, in [`META`].
const DEVICE: &str = "index_device";

/// Layout 1's bag, read only to migrate it.
const INDEX_META: TableDefinition<&str, &[u8]> = TableDefinition::new("index_meta");

/// This device's published chain: a checkpoint (every op) and the deltas after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chain {
    /// The last op (by the order counter) the published chain holds.
    pub upto: u64,
    /// The caps of the chain: its checkpoint first, then its deltas.
    pub caps: Vec<String>,
    /// The chain before (kept for readers that resolved its head a moment ago).
    pub previous: Vec<String>,
    /// The bytes of the last head published, and whether it was a delta.
    #[serde(default)]
    pub last_bytes: u64,
    #[serde(default)]
    pub last_delta: bool,
}

/// Appends ops to the order they came in, in the transaction that keeps them.
pub(super) fn order_ops(tx: &WriteTransaction, ops: &[jewel::index::Op]) -> Result<(), StateError> {
    let mut t = tx.open_table(ORDER)?;
    let first = t.last()?.map_or(0, |(k, _)| k.value()) + 1;
    for (at, op) in (first..).zip(ops) {
        t.insert(at, (op.id.clock, op.id.device))?;
    }
    Ok(())
}

/// What this device published last as its head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    /// Ops the published snapshot held, once it was found in the DHT.
    pub ops: u64,
    pub cap: Option<String>,
    /// The snapshot before (kept for readers that resolved the older record), as a node
    /// kept it before chains ([`Chain`]): read once, to release it with the first chain.
    pub previous: Option<String>,
    /// The signed records (this device's slot, the latest slot), encoded.
    pub device_record: Vec<u8>,
    pub latest_record: Vec<u8>,
}

fn head_of(row: HeadRow) -> Head {
    let (seq, ops, cap, previous, device_record, latest_record) = row;
    Head {
        seq,
        ops,
        cap: cap.map(String::from),
        previous: previous.map(String::from),
        device_record: device_record.to_vec(),
        latest_record: latest_record.to_vec(),
    }
}

fn put_head(tx: &WriteTransaction, head: &Head) -> Result<(), StateError> {
    let mut t = tx.open_table(HEAD)?;
    let row = (
        head.seq,
        head.ops,
        head.cap.as_deref(),
        head.previous.as_deref(),
        head.device_record.as_slice(),
        head.latest_record.as_slice(),
    );
    t.insert((), row)?;
    Ok(())
}

impl StateStore {
    /// This device's id in the user's index, if it has one yet.
    pub fn index_device(&self) -> Result<Option<u64>, StateError> {
        let Some((_tx, t)) = self.open_read(META)? else { return Ok(None) };
        Ok(t.get(DEVICE)?.map(|v| v.value()))
    }

    /// Sets this device's id (once, at its first start).
    pub fn set_index_device(&self, device: u64) -> Pending<()> {
        self.write(Durability::Durable, move |tx| {
            tx.open_table(META)?.insert(DEVICE, device)?;
            Ok(())
        })
    }

    /// What this device published last (all zero and empty before its first head).
    pub fn head(&self) -> Result<Head, StateError> {
        let Some((_tx, t)) = self.open_read(HEAD)? else { return Ok(Head::default()) };
        Ok(t.get(())?.map(|v| head_of(v.value())).unwrap_or_default())
    }

    /// Changes this device's head record (read and written in one transaction).
    pub fn update_head(&self, change: impl Fn(&mut Head) + Send + 'static) -> Pending<()> {
        self.write(Durability::Durable, move |tx| {
            let mut head = {
                let t = tx.open_table(HEAD)?;
                let row = t.get(())?;
                row.map(|v| head_of(v.value())).unwrap_or_default()
            };
            change(&mut head);
            put_head(tx, &head)
        })
    }

    /// The ops that came after the `after`th (by the order counter), and the last counter
    /// (`after` if none came).
    pub fn ops_after(&self, after: u64) -> Result<(u64, Vec<jewel::index::OpId>), StateError> {
        let Some((_tx, t)) = self.open_read(ORDER)? else { return Ok((after, Vec::new())) };
        let (mut last, mut ids) = (after, Vec::new());
        for row in t.range(after.saturating_add(1)..)? {
            let (k, v) = row?;
            let (clock, device) = v.value();
            last = k.value();
            ids.push(jewel::index::OpId { clock, device });
        }
        Ok((last, ids))
    }

    /// This device's published chain (empty before its first publication).
    pub fn chain(&self) -> Result<Chain, StateError> {
        let Some((_tx, t)) = self.open_read(CHAIN)? else { return Ok(Chain::default()) };
        let Some(v) = t.get(())? else { return Ok(Chain::default()) };
        serde_json::from_slice(v.value()).map_err(|e| self.damaged(format!("the index chain: {e}")))
    }

    pub fn set_chain(&self, chain: Chain) -> Pending<()> {
        self.write(Durability::Durable, move |tx| {
            let bytes = serde_json::to_vec(&chain)?;
            tx.open_table(CHAIN)?.insert((), bytes.as_slice())?;
            Ok(())
        })
    }

    /// The highest sequence number merged from the record whose DHT key hashes to `key`.
    pub fn seen(&self, key: [u8; 32]) -> Result<u64, StateError> {
        let Some((_tx, t)) = self.open_read(SEEN)? else { return Ok(0) };
        Ok(t.get(key)?.map_or(0, |v| v.value()))
    }

    pub fn set_seen(&self, key: [u8; 32], seq: u64) -> Pending<()> {
        self.write(Durability::Durable, move |tx| {
            tx.open_table(SEEN)?.insert(key, seq)?;
            Ok(())
        })
    }

    /// The cap a folder node whose bytes hash to `hash` was stored under (or, keyed by a hash
    /// derived from a packed file's cap, the copy of it that `share` stored).
    pub fn folder_node(&self, hash: [u8; 32]) -> Result<Option<String>, StateError> {
        let Some((_tx, t)) = self.open_read(FOLDER_NODES)? else { return Ok(None) };
        Ok(t.get(hash)?.map(|v| v.value().to_string()))
    }

    pub fn set_folder_node(&self, hash: [u8; 32], cap: &str) -> Pending<()> {
        let cap = cap.to_string();
        self.write(Durability::Durable, move |tx| {
            tx.open_table(FOLDER_NODES)?.insert(hash, cap.as_str())?;
            Ok(())
        })
    }

    /// The names the user published from this device: label → signed record (encoded).
    pub fn names(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.scan(NAMES, |k, v| Ok((k.to_string(), v.to_vec())))
    }

    pub fn name(&self, label: &str) -> Result<Option<Vec<u8>>, StateError> {
        let Some((_tx, t)) = self.open_read(NAMES)? else { return Ok(None) };
        Ok(t.get(label)?.map(|v| v.value().to_vec()))
    }

    pub fn set_name(&self, label: &str, record: Vec<u8>) -> Pending<()> {
        let label = label.to_string();
        self.write(Durability::Durable, move |tx| {
            tx.open_table(NAMES)?.insert(label.as_str(), record.as_slice())?;
            Ok(())
        })
    }
}

fn hex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn meta_insert(tx: &WriteTransaction, key: &str, value: u64) -> Result<(), StateError> {
    tx.open_table(META)?.insert(key, value)?;
    Ok(())
}

fn u64_of(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

/// Moves layout 1's `index_meta` into the typed tables, within `tx` (which sets layout 2),
/// and deletes it. A row that cannot be read is skipped with a warning: all of it can be
/// made again (a head is republished, a seen number only saves a read, a folder node is
/// stored again), except the device id, whose loss would make this device a new one.
pub(super) fn migrate_meta(tx: &WriteTransaction) -> Result<usize, StateError> {
    let rows: Vec<(String, Vec<u8>)> = match tx.open_table(INDEX_META) {
        Ok(t) => {
            let mut rows = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                rows.push((k.value().to_string(), v.value().to_vec()));
            }
            rows
        }
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut head = Head::default();
    let mut names: Vec<String> = Vec::new();
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, value) in &rows {
        let text = String::from_utf8(value.clone()).ok();
        let number = u64_of(value);
        let read = match key.as_str() {
            "device" => number.map(|d| meta_insert(tx, DEVICE, d)).transpose()?.is_some(),
            "head/seq" => number.map(|s| head.seq = s).is_some(),
            "head/ops" => number.map(|s| head.ops = s).is_some(),
            "head/cap" => text.map(|c| head.cap = Some(c)).is_some(),
            "head/previous" => text.map(|c| head.previous = Some(c)).is_some(),
            "head/record/device" => {
                head.device_record = value.clone();
                true
            }
            "head/record/latest" => {
                head.latest_record = value.clone();
                true
            }
            "names" => text
                .map(|t| names = t.split('\n').filter(|l| !l.is_empty()).map(String::from).collect())
                .is_some(),
            k => match (k.strip_prefix("seen/").and_then(hex32), k.strip_prefix("dag/").and_then(hex32)) {
                (Some(h), _) => match number {
                    Some(s) => {
                        tx.open_table(SEEN)?.insert(h, s)?;
                        true
                    }
                    None => false,
                },
                (_, Some(h)) => match text {
                    Some(c) => {
                        let mut t = tx.open_table(FOLDER_NODES)?;
                        t.insert(h, c.as_str())?;
                        true
                    }
                    None => false,
                },
                _ => match k.strip_prefix("name/") {
                    Some(label) => {
                        records.push((label.to_string(), value.clone()));
                        true
                    }
                    None => false,
                },
            },
        };
        if !read {
            tracing::warn!(key = %key, "an index bookkeeping row of layout 1 could not be read; skipped");
        }
    }
    if head != Head::default() {
        put_head(tx, &head)?;
    }
    let mut t = tx.open_table(NAMES)?;
    for (label, record) in records.iter().filter(|(l, _)| names.contains(l)) {
        t.insert(label.as_str(), record.as_slice())?;
    }
    drop(t);
    tx.delete_table(INDEX_META)?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_1_bookkeeping_moves_into_the_typed_tables_once() {
        let home = tempfile::tempdir().unwrap();
        let store = StateStore::open(home.path()).unwrap();
        let seen_hash = [3u8; 32];
        let dag_hash = [9u8; 32];
        let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let rows: Vec<(String, Vec<u8>)> = vec![
            ("device".into(), 42u64.to_be_bytes().to_vec()),
            ("head/seq".into(), 7u64.to_be_bytes().to_vec()),
            ("head/ops".into(), 5u64.to_be_bytes().to_vec()),
            ("head/cap".into(), b"jewel:r1:CAP".to_vec()),
            ("head/record/latest".into(), vec![1, 2, 3]),
            (format!("seen/{}", hex(&seen_hash)), 99u64.to_be_bytes().to_vec()),
            (format!("dag/{}", hex(&dag_hash)), b"jewel:r1:DAG".to_vec()),
            ("names".into(), b"blog\nphotos".to_vec()),
            ("name/blog".into(), vec![4, 5]),
            ("name/photos".into(), vec![6]),
            ("name/dropped".into(), vec![7]),
        ];
        // Layout 1, as an older node left it.
        store
            .write(Durability::Durable, move |tx| {
                let mut t = tx.open_table(INDEX_META)?;
                for (k, v) in &rows {
                    t.insert(k.as_str(), v.as_slice())?;
                }
                tx.open_table(META)?.insert("version", 1)?;
                Ok(())
            })
            .wait()
            .unwrap();
        drop(store);
        let store = StateStore::open(home.path()).unwrap();
        assert_eq!(store.index_device().unwrap(), Some(42));
        let head = store.head().unwrap();
        assert_eq!((head.seq, head.ops, head.cap.as_deref()), (7, 5, Some("jewel:r1:CAP")));
        assert_eq!(head.latest_record, vec![1, 2, 3]);
        assert_eq!(store.seen(seen_hash).unwrap(), 99);
        assert_eq!(store.folder_node(dag_hash).unwrap().as_deref(), Some("jewel:r1:DAG"));
        // A record whose label the list no longer named was not published any more.
        assert_eq!(store.names().unwrap(), vec![("blog".into(), vec![4, 5]), ("photos".into(), vec![6])]);
        assert!(store.open_read(INDEX_META).unwrap().is_none(), "the old bag is gone");
        drop(store);
        // Opened again, nothing moves twice.
        let store = StateStore::open(home.path()).unwrap();
        assert_eq!(store.head().unwrap(), head);
    }
}
