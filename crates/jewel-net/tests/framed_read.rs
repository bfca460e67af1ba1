//! The patched `asynchronous-codec` (vendor/asynchronous-codec): a framed reader asks its
//! source for up to 64 KiB per read once reads come back full, where 0.7.0 asked for 8 KiB
//! every time. libp2p's noise reads every byte of a noise connection through it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use asynchronous_codec::{Bytes, FramedRead, LengthCodec};
use futures::{executor::block_on, AsyncRead, StreamExt};

/// A source that hands out as much as each read asks for, and counts the reads.
struct Counted {
    data: Vec<u8>,
    at: usize,
    reads: usize,
    largest: usize,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        self.reads += 1;
        self.largest = self.largest.max(buf.len());
        Poll::Ready(Ok(n))
    }
}

#[test]
fn a_framed_reader_reads_64_kib_at_a_time_and_loses_nothing() {
    // 32 frames of 60 KiB, each an 8-byte length and then its bytes, as noise frames are
    // (up to 64 KiB each) on a bulk transfer.
    let frames: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 60 << 10]).collect();
    let mut data = Vec::new();
    for f in &frames {
        data.extend_from_slice(&(f.len() as u64).to_be_bytes());
        data.extend_from_slice(f);
    }
    let total = data.len();
    let mut reader = FramedRead::new(Counted { data, at: 0, reads: 0, largest: 0 }, LengthCodec);
    let got: Vec<Bytes> = block_on(async {
        let mut got = Vec::new();
        while let Some(frame) = reader.next().await {
            got.push(frame.unwrap());
        }
        got
    });
    assert_eq!(got.len(), frames.len());
    assert!(got.iter().zip(&frames).all(|(g, f)| g[..] == f[..]), "the frames came back changed");
    let source = reader.into_parts().io;
    assert_eq!(source.largest, 64 << 10, "the largest read asked for");
    // 1.9 MiB in 64 KiB reads, after 8, 16 and 32 KiB ones: about 34 reads; 0.7.0 made 241.
    assert!(source.reads <= total.div_ceil(64 << 10) + 4, "{} reads for {total} bytes", source.reads);
}
