//! The block protocol's wire format, `/jewel/block/1.0.0`: requests one after another on a
//! stream, each answered in full before the next.
//!
//! ```text
//! request  := "JB" version(u8 = 1) op(u8) body
//!   PUT   1: id[32] size(u64)            the peer answers a status (go, or e.g. full);
//!                                        then exactly `size` bytes of block data, and
//!                                        the peer answers a final status
//!   GET   2: id[32] offset(u64) len(u64) (len ≤ MAX_GET)
//!   HAS   3: count(u16 ≤ MAX_HAS) id[32]*count
//!   PROVE 4: id[32] group(u64)           (one 16 KiB chunk group, chosen by the asker)
//!   LEASE 6: file[32] seconds(u32) count(u16 ≤ MAX_HAS) id[32]*count
//!                                        lease the blocks for the file for that long
//!                                        from now (0 releases them); the reply is a HAS
//!                                        reply: which of the blocks the peer holds
//!   SEND  5: max-size(u64)               a put whose id is known only at its end: the
//!                                        peer answers go (or why not) for up to max-size
//!                                        bytes; then frames `len(u32 ≤ MAX_FRAME) data`, a
//!                                        frame of length 0, the id[32], and the peer's
//!                                        final status
//! response := status(u8) body
//!   OK for PUT:         nothing
//!   OK for GET, PROVE:  size(u64) fragment-len(u32 ≤ MAX_FRAGMENT) fragment (bao encoding)
//!   OK for HAS:         count(u16) bitmap[ceil(count/8)]
//!   any error status:   reason-len(u16 ≤ MAX_REASON) reason (UTF-8)
//! ```
//!
//! Integers are little-endian. Every length is checked against its limit before anything
//! is allocated. Owns the format only: no store, no swarm.

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use jewel_store::BlockId;

const MAGIC: &[u8; 2] = b"JB";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// The most bytes one GET may ask for.
pub const MAX_GET: u64 = 16 << 20;
/// The most ids one HAS may ask about.
pub const MAX_HAS: usize = 1024;
/// The largest fragment accepted: MAX_GET of data plus its proof (64 bytes per 16 KiB
/// group, and the path above them).
pub const MAX_FRAGMENT: u32 = (MAX_GET + (MAX_GET / 16384 + 64) * 64) as u32;
/// The longest error reason accepted.
pub const MAX_REASON: usize = 1024;
/// The largest block a PUT may announce.
pub const MAX_BLOCK: u64 = 1 << 40;
/// The largest data frame of a SEND.
pub const MAX_FRAME: u32 = 1 << 20;

const OP_PUT: u8 = 1;
const OP_GET: u8 = 2;
const OP_HAS: u8 = 3;
const OP_PROVE: u8 = 4;
const OP_SEND: u8 = 5;
const OP_LEASE: u8 = 6;

/// A request, as the first bytes of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Put { id: BlockId, size: u64 },
    Get { id: BlockId, offset: u64, len: u64 },
    Has { ids: Vec<BlockId> },
    Prove { id: BlockId, group: u64 },
    Send { max_size: u64 },
    Lease { file: BlockId, seconds: u32, ids: Vec<BlockId> },
}

/// One frame of a SEND.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    /// The end: the id the data must hash to.
    End(BlockId),
}

/// A response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    Full = 2,
    BadRequest = 3,
    HashMismatch = 4,
    Corrupt = 5,
    Busy = 6,
    UnsupportedVersion = 7,
    Internal = 8,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Full,
            3 => Status::BadRequest,
            4 => Status::HashMismatch,
            5 => Status::Corrupt,
            6 => Status::Busy,
            7 => Status::UnsupportedVersion,
            8 => Status::Internal,
            _ => return None,
        })
    }
}

/// Why bytes on a stream were refused, or what the remote refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a jewel block-protocol stream (bad magic)")]
    BadMagic,
    #[error("block protocol version {0} is not supported (this peer speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown block-protocol operation {0}")]
    UnknownOp(u8),
    #[error("unknown response status {0}")]
    UnknownStatus(u8),
    #[error("{what} of {size} exceeds the limit of {max}")]
    TooLarge { what: &'static str, size: u64, max: u64 },
    #[error("peer refused: {status:?}: {reason}")]
    Refused { status: Status, reason: String },
    #[error("{0} bytes follow the end of a message")]
    Trailing(usize),
    #[error("the stream ended after {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
}

fn too_large(what: &'static str, size: u64, max: u64) -> Result<(), WireError> {
    if size > max {
        return Err(WireError::TooLarge { what, size, max });
    }
    Ok(())
}

async fn read_array<const N: usize, R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; N], WireError> {
    let mut a = [0u8; N];
    r.read_exact(&mut a).await?;
    Ok(a)
}

async fn read_u64<R: AsyncRead + Unpin>(r: &mut R) -> Result<u64, WireError> {
    Ok(u64::from_le_bytes(read_array(r).await?))
}

async fn read_id<R: AsyncRead + Unpin>(r: &mut R) -> Result<BlockId, WireError> {
    Ok(BlockId(read_array(r).await?))
}

/// A count (at most [`MAX_HAS`]) and that many ids.
async fn read_ids<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<BlockId>, WireError> {
    let count = u16::from_le_bytes(read_array(r).await?) as usize;
    too_large("id count", count as u64, MAX_HAS as u64)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(read_id(r).await?);
    }
    Ok(ids)
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Request::Put { id, size } => {
                out.push(OP_PUT);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&size.to_le_bytes());
            }
            Request::Get { id, offset, len } => {
                out.push(OP_GET);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Request::Has { ids } => {
                out.push(OP_HAS);
                out.extend_from_slice(&(ids.len() as u16).to_le_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
            Request::Prove { id, group } => {
                out.push(OP_PROVE);
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&group.to_le_bytes());
            }
            Request::Send { max_size } => {
                out.push(OP_SEND);
                out.extend_from_slice(&max_size.to_le_bytes());
            }
            Request::Lease { file, seconds, ids } => {
                out.push(OP_LEASE);
                out.extend_from_slice(&file.0);
                out.extend_from_slice(&seconds.to_le_bytes());
                out.extend_from_slice(&(ids.len() as u16).to_le_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
        }
        out
    }

    /// Reads one request header from a stream, checking every limit.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, WireError> {
        let head: [u8; 4] = read_array(r).await?;
        if &head[..2] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if head[2] != VERSION {
            return Err(WireError::UnsupportedVersion(head[2]));
        }
        Ok(match head[3] {
            OP_PUT => {
                let id = read_id(r).await?;
                let size = read_u64(r).await?;
                too_large("block size", size, MAX_BLOCK)?;
                Request::Put { id, size }
            }
            OP_GET => {
                let id = read_id(r).await?;
                let offset = read_u64(r).await?;
                let len = read_u64(r).await?;
                too_large("get length", len, MAX_GET)?;
                Request::Get { id, offset, len }
            }
            OP_HAS => Request::Has { ids: read_ids(r).await? },
            OP_LEASE => {
                let file = read_id(r).await?;
                let seconds = u32::from_le_bytes(read_array(r).await?);
                Request::Lease { file, seconds, ids: read_ids(r).await? }
            }
            OP_PROVE => Request::Prove { id: read_id(r).await?, group: read_u64(r).await? },
            OP_SEND => {
                let max_size = read_u64(r).await?;
                too_large("block size", max_size, MAX_BLOCK)?;
                Request::Send { max_size }
            }
            op => return Err(WireError::UnknownOp(op)),
        })
    }

    /// Parses a whole request from bytes (for fuzzing and tests); trailing bytes are an
    /// error, except a PUT's block data.
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        let mut r = bytes;
        let req = futures::executor::block_on(Request::read(&mut r))?;
        if !r.is_empty() && !matches!(req, Request::Put { .. } | Request::Send { .. }) {
            return Err(WireError::Trailing(r.len()));
        }
        Ok(req)
    }
}

/// Writes an error response.
pub async fn write_error<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: Status,
    reason: &str,
) -> std::io::Result<()> {
    let mut reason = reason.as_bytes();
    if reason.len() > MAX_REASON {
        reason = &reason[..MAX_REASON];
    }
    let mut out = vec![status as u8];
    out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    out.extend_from_slice(reason);
    w.write_all(&out).await?;
    w.flush().await
}

/// Writes an OK status with no body (the PUT reply).
pub async fn write_ok<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    w.write_all(&[Status::Ok as u8]).await?;
    w.flush().await
}

/// Writes an OK fragment reply.
pub async fn write_fragment<W: AsyncWrite + Unpin>(
    w: &mut W,
    size: u64,
    fragment: &[u8],
) -> std::io::Result<()> {
    let mut head = vec![Status::Ok as u8];
    head.extend_from_slice(&size.to_le_bytes());
    head.extend_from_slice(&(fragment.len() as u32).to_le_bytes());
    w.write_all(&head).await?;
    w.write_all(fragment).await?;
    w.flush().await
}

/// Writes an OK HAS reply.
pub async fn write_has<W: AsyncWrite + Unpin>(w: &mut W, present: &[bool]) -> std::io::Result<()> {
    let mut out = vec![Status::Ok as u8];
    out.extend_from_slice(&(present.len() as u16).to_le_bytes());
    let mut bits = vec![0u8; present.len().div_ceil(8)];
    for (i, p) in present.iter().enumerate() {
        if *p {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bits);
    w.write_all(&out).await?;
    w.flush().await
}

/// Writes one SEND data frame (`data` at most [`MAX_FRAME`] bytes, never empty).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    w.write_all(&(data.len() as u32).to_le_bytes()).await?;
    w.write_all(data).await
}

/// Writes the end of a SEND: an empty frame and the id.
pub async fn write_end<W: AsyncWrite + Unpin>(w: &mut W, id: &BlockId) -> std::io::Result<()> {
    let mut out = [0u8; 36];
    out[4..].copy_from_slice(&id.0);
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads one SEND frame, checking its length before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, WireError> {
    read_frame_into(r, Vec::new()).await
}

/// Like [`read_frame`], but reads the data into `buf`'s allocation (a receiver that hands
/// frames back for reuse zeroes and faults in no new memory per frame).
pub async fn read_frame_into<R: AsyncRead + Unpin>(r: &mut R, mut buf: Vec<u8>) -> Result<Frame, WireError> {
    let len = u32::from_le_bytes(read_array(r).await?);
    if len == 0 {
        return Ok(Frame::End(read_id(r).await?));
    }
    too_large("frame", u64::from(len), u64::from(MAX_FRAME))?;
    buf.resize(len as usize, 0);
    r.read_exact(&mut buf).await?;
    Ok(Frame::Data(buf))
}

/// Reads a status; an error status becomes `WireError::Refused` with its reason.
pub async fn read_status<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), WireError> {
    let [b] = read_array::<1, _>(r).await?;
    let status = Status::from_u8(b).ok_or(WireError::UnknownStatus(b))?;
    if status == Status::Ok {
        return Ok(());
    }
    let len = u16::from_le_bytes(read_array(r).await?) as usize;
    too_large("error reason", len as u64, MAX_REASON as u64)?;
    let mut reason = vec![0u8; len];
    r.read_exact(&mut reason).await?;
    Err(WireError::Refused { status, reason: String::from_utf8_lossy(&reason).into_owned() })
}

/// Reads an OK fragment reply's body: the block size and the fragment.
pub async fn read_fragment<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u64, Vec<u8>), WireError> {
    let (size, len) = read_fragment_head(r).await?;
    let mut frag = vec![0u8; len as usize];
    r.read_exact(&mut frag).await?;
    Ok((size, frag))
}

/// Reads the head of an OK GET or PROVE reply: the block's size and the fragment's length
/// (within [`MAX_FRAGMENT`]). The fragment follows; the caller reads it as it checks it.
pub async fn read_fragment_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u64, u32), WireError> {
    read_status(r).await?;
    let size = read_u64(r).await?;
    let len = u32::from_le_bytes(read_array(r).await?);
    too_large("fragment", u64::from(len), u64::from(MAX_FRAGMENT))?;
    Ok((size, len))
}

/// Reads an OK HAS reply for `asked` ids.
pub async fn read_has<R: AsyncRead + Unpin>(r: &mut R, asked: usize) -> Result<Vec<bool>, WireError> {
    read_status(r).await?;
    let count = u16::from_le_bytes(read_array(r).await?) as usize;
    if count != asked {
        return Err(WireError::TooLarge { what: "has reply count", size: count as u64, max: asked as u64 });
    }
    let mut bits = vec![0u8; count.div_ceil(8)];
    r.read_exact(&mut bits).await?;
    Ok((0..count).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn requests_round_trip() {
        let id = BlockId::of(b"x");
        for req in [
            Request::Put { id, size: 123 },
            Request::Get { id, offset: 5, len: MAX_GET },
            Request::Has { ids: vec![id; 3] },
            Request::Has { ids: vec![] },
            Request::Prove { id, group: 9 },
            Request::Send { max_size: 1 << 30 },
            Request::Lease { file: id, seconds: 60, ids: vec![id; 2] },
        ] {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
    }

    #[test]
    fn bad_requests_get_their_own_errors() {
        let id = BlockId::of(b"x");
        let mut v = Request::Get { id, offset: 0, len: 1 }.encode();
        v[2] = 2;
        assert!(matches!(Request::decode(&v), Err(WireError::UnsupportedVersion(2))));
        v[2] = VERSION;
        v[3] = 77;
        assert!(matches!(Request::decode(&v), Err(WireError::UnknownOp(77))));
        assert!(matches!(Request::decode(b"XX\x01\x02"), Err(WireError::BadMagic)));
        let big = Request::Get { id, offset: 0, len: MAX_GET + 1 }.encode();
        assert!(matches!(Request::decode(&big), Err(WireError::TooLarge { .. })));
        let mut has = vec![b'J', b'B', VERSION, OP_HAS];
        has.extend_from_slice(&(MAX_HAS as u16 + 1).to_le_bytes());
        assert!(matches!(Request::decode(&has), Err(WireError::TooLarge { .. })));
        let cut = Request::Prove { id, group: 1 }.encode();
        assert!(matches!(Request::decode(&cut[..cut.len() - 1]), Err(WireError::Io(_))));
    }

    #[test]
    fn replies_round_trip() {
        let mut buf = Vec::new();
        block_on(write_fragment(&mut buf, 77, b"frag")).unwrap();
        assert_eq!(block_on(read_fragment(&mut &buf[..])).unwrap(), (77, b"frag".to_vec()));
        let mut buf = Vec::new();
        let present = [true, false, true, true, false, false, false, false, true];
        block_on(write_has(&mut buf, &present)).unwrap();
        assert_eq!(block_on(read_has(&mut &buf[..], 9)).unwrap(), present);
        let mut buf = Vec::new();
        block_on(write_error(&mut buf, Status::Full, "store is full")).unwrap();
        match block_on(read_fragment(&mut &buf[..])) {
            Err(WireError::Refused { status: Status::Full, reason }) => assert_eq!(reason, "store is full"),
            other => panic!("{other:?}"),
        }
        let mut buf = vec![Status::Ok as u8];
        buf.extend_from_slice(&0u64.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(block_on(read_fragment(&mut &buf[..])), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let id = BlockId::of(b"y");
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, b"abc")).unwrap();
        block_on(write_end(&mut buf, &id)).unwrap();
        let mut r = &buf[..];
        assert_eq!(block_on(read_frame(&mut r)).unwrap(), Frame::Data(b"abc".to_vec()));
        assert_eq!(block_on(read_frame(&mut r)).unwrap(), Frame::End(id));
        assert!(r.is_empty());
        let huge = (MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(block_on(read_frame(&mut &huge[..])), Err(WireError::TooLarge { .. })));
        let too_big = Request::Send { max_size: MAX_BLOCK + 1 }.encode();
        assert!(matches!(Request::decode(&too_big), Err(WireError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = Request::decode(&bytes);
        }
    }
}
