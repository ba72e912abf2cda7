//! Frames queued as encoded bytes and split payloads reach the stream in
//! order, whatever each vectored write takes, and a payload's buffer is
//! let go once it is written.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::{write_or_flush, Outgoing};
use crate::session::Transmit;

/// A stream that takes at most the next of `takes` bytes per write (cycling
/// through them), across as many slices as that covers.
struct Stingy {
    got: Vec<u8>,
    takes: Vec<usize>,
    calls: usize,
}

impl AsyncWrite for Stingy {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut left = self.takes[self.calls % self.takes.len()];
        self.calls += 1;
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(left);
            self.got.extend_from_slice(&b[..take]);
            n += take;
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Queues whole frames and split frames (head, payload, trailer), then
/// writes them out; returns the bytes the stream got and the payloads.
fn queue_and_write(takes: Vec<usize>) -> (Vec<u8>, Vec<u8>, Vec<Bytes>) {
    let mut out = Outgoing::default();
    let mut expected = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..40u32 {
        let head: Vec<u8> = (0..(i % 7 + 1)).map(|k| (i * 13 + k) as u8).collect();
        out.room(1024)[..head.len()].copy_from_slice(&head);
        expected.extend_from_slice(&head);
        let frame = if i % 3 == 0 {
            Transmit::Whole(head.len())
        } else {
            let payload: Bytes = (0..(i * 997 % 5000 + 1)).map(|k| (k ^ i) as u8).collect();
            let trailer = i.to_le_bytes();
            expected.extend_from_slice(&payload);
            expected.extend_from_slice(&trailer);
            payloads.push(payload.clone());
            Transmit::Split {
                head_len: head.len(),
                payload,
                trailer,
            }
        };
        out.push(frame);
    }
    let mut stream = Stingy {
        got: Vec::new(),
        takes,
        calls: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for _ in 0..1_000_000 {
        if out.is_empty() {
            break;
        }
        let n = rt.block_on(write_or_flush(&mut stream, &out)).unwrap();
        assert!(n > 0, "something waits, so a write takes bytes");
        out.advance(n);
    }
    assert!(out.is_empty(), "everything was written");
    (stream.got, expected, payloads)
}

#[test]
fn the_stream_gets_every_part_in_order_however_writes_cut_it() {
    for takes in [
        vec![1],
        vec![3, 1, 7],
        vec![4096, 1, 65_536],
        vec![usize::MAX],
    ] {
        let (got, expected, payloads) = queue_and_write(takes.clone());
        assert_eq!(got.len(), expected.len(), "takes {takes:?}");
        assert!(got == expected, "takes {takes:?}: the bytes differ");
        // Written payloads are let go: their read-ahead buffers can be
        // read into again.
        for p in payloads {
            assert!(p.is_unique());
        }
    }
}

/// A payload not yet written whole is still held; one written whole is
/// not, even while later parts wait.
#[test]
fn a_payload_is_held_until_its_last_byte_is_written() {
    let mut out = Outgoing::default();
    let payload = Bytes::from(vec![9u8; 100]);
    out.room(64)[..2].copy_from_slice(b"hd");
    out.push(Transmit::Split {
        head_len: 2,
        payload: payload.clone(),
        trailer: *b"crc!",
    });
    out.room(64)[..3].copy_from_slice(b"end");
    out.push(Transmit::Whole(3));
    out.advance(2 + 99);
    assert!(!payload.is_unique());
    out.advance(1);
    assert!(payload.is_unique());
    assert!(!out.is_empty());
    out.advance(4 + 3);
    assert!(out.is_empty());
}
