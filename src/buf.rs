//! Outbound byte chunks shared between the engine (which produces them) and the io layer (which
//! queues and writes them). A broadcast is encoded once into an `Arc<[u8]>` and the same allocation
//! is queued on every recipient's connection.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

thread_local! {
    /// Emptied chunk queues of this thread's connections, for the next connection that queues
    /// bytes: a connection written once a turn (an ack, a broadcast) would otherwise allocate and
    /// free its queue every time, and an idle one must hold none.
    static SPARE_QUEUES: RefCell<Vec<VecDeque<Chunk>>> = const { RefCell::new(Vec::new()) };
}

/// An owned chunk this small is copied onto the end of the owned chunk queued before it when
/// that one has room (it then starts one with [`COALESCED_CAPACITY`]): a connection answered many
/// times in one turn (acks) holds one buffer instead of a small allocation per answer, and each
/// answer's own allocation is freed at once, for the next one to reuse.
const COALESCE_MAX: usize = 256;
/// The room an owned chunk that small chunks are copied into starts with.
const COALESCED_CAPACITY: usize = 512;

/// Most spare queues a thread keeps (a few KiB).
const SPARE_QUEUES_KEPT: usize = 256;
/// A queue grown past this many chunks (a burst) is freed rather than kept.
const SPARE_QUEUE_CHUNKS_MAX: usize = 16;

/// One piece of bytes to write to a connection.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// A small header (e.g. a WebSocket frame header) stored inline: no allocation per recipient.
    Inline {
        /// Storage; only the first `len` bytes are part of the chunk.
        bytes: [u8; 14],
        /// How many bytes of `bytes` are used (at most 14).
        len: u8,
    },
    /// Bytes shared by every recipient of a broadcast.
    Shared(Arc<[u8]>),
    /// Bytes owned by this one write (an HTTP response, a polling payload).
    Owned(Vec<u8>),
}

impl Chunk {
    /// Builds an inline chunk; `bytes` longer than 14 are stored as an owned chunk instead.
    pub fn inline(bytes: &[u8]) -> Chunk {
        let mut buf = [0u8; 14];
        match buf.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Chunk::Inline {
                    bytes: buf,
                    len: bytes.len() as u8,
                }
            }
            None => Chunk::Owned(bytes.to_vec()),
        }
    }

    /// The chunk's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Inline { bytes, len } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            Chunk::Shared(b) => b,
            Chunk::Owned(v) => v,
        }
    }

    /// Number of bytes in the chunk.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the chunk has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Self {
        Chunk::Owned(v)
    }
}

impl From<Arc<[u8]>> for Chunk {
    fn from(v: Arc<[u8]>) -> Self {
        Chunk::Shared(v)
    }
}

/// A FIFO of chunks with a count of unsent bytes, so a cap can be enforced per connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    queued: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `chunk` after everything already queued; an empty chunk is ignored.
    pub fn push(&mut self, chunk: Chunk) {
        if chunk.is_empty() {
            return;
        }
        self.queued += chunk.len();
        if let Chunk::Owned(small) = &chunk {
            if small.len() <= COALESCE_MAX {
                match self.chunks.back_mut() {
                    Some(Chunk::Owned(back)) if back.capacity() - back.len() >= small.len() => {
                        back.extend_from_slice(small);
                        return;
                    }
                    Some(Chunk::Owned(back)) if back.len() <= COALESCE_MAX => {
                        let mut grown = Vec::with_capacity(COALESCED_CAPACITY);
                        grown.extend_from_slice(back);
                        grown.extend_from_slice(small);
                        *back = grown;
                        return;
                    }
                    _ => {}
                }
            }
        }
        if self.chunks.capacity() == 0 {
            if let Ok(Some(spare)) = SPARE_QUEUES.try_with(|q| q.borrow_mut().pop()) {
                self.chunks = spare;
            }
        }
        self.chunks.push_back(chunk);
    }

    /// Unsent bytes.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether every queued byte has been written.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Fills `out` with slices of unsent bytes, in order, for a vectored write; returns how many.
    pub fn fill_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, (i, chunk)) in out.iter_mut().zip(self.chunks.iter().enumerate()) {
            let bytes = chunk.as_slice();
            let bytes = if i == 0 {
                bytes.get(self.front_written..).unwrap_or(&[])
            } else {
                bytes
            };
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes as written.
    pub fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if n >= left {
                n -= left;
                self.chunks.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += n;
                n = 0;
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            // Give memory back once a burst is written: idle connections should cost little.
            let emptied = std::mem::take(&mut self.chunks);
            if emptied.capacity() <= SPARE_QUEUE_CHUNKS_MAX {
                let _ = SPARE_QUEUES.try_with(|q| {
                    let mut q = q.borrow_mut();
                    if q.len() < SPARE_QUEUES_KEPT {
                        q.push(emptied);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn spare_queues() -> usize {
        SPARE_QUEUES.with(|q| q.borrow().len())
    }

    /// A queue written empty hands its storage to the next queue of the thread, and holds none
    /// itself; a queue grown by a burst is freed instead.
    #[test]
    fn an_emptied_queue_lends_its_storage_to_the_next() {
        let before = spare_queues();
        let mut a = OutQueue::new();
        a.push(Chunk::inline(b"ab"));
        a.advance(2);
        assert_eq!(a.chunks.capacity(), 0);
        assert_eq!(spare_queues(), before + 1);
        let mut b = OutQueue::new();
        b.push(Chunk::inline(b"cd"));
        assert_eq!(spare_queues(), before);
        for _ in 0..100 {
            b.push(Chunk::inline(b"ef"));
        }
        b.advance(b.queued_bytes());
        assert_eq!(b.chunks.capacity(), 0);
        assert_eq!(spare_queues(), before);
    }

    /// Small owned chunks queued one after another end up in one buffer, in order, across a
    /// partly written front, and a large one stays a chunk of its own.
    #[test]
    fn small_owned_chunks_are_copied_into_one_buffer() {
        let mut q = OutQueue::new();
        q.push(Chunk::Owned(b"ab".to_vec()));
        q.push(Chunk::Owned(b"cd".to_vec()));
        q.advance(1);
        q.push(Chunk::Owned(b"ef".to_vec()));
        assert_eq!(q.chunks.len(), 1);
        q.push(Chunk::inline(b"gh"));
        q.push(Chunk::Owned(vec![b'i'; 300]));
        q.push(Chunk::Owned(b"jk".to_vec()));
        assert_eq!(q.chunks.len(), 4);
        let mut s = [IoSlice::new(&[]); 8];
        let n = q.fill_slices(&mut s);
        let joined: Vec<u8> = s[..n].iter().flat_map(|x| x.iter().copied()).collect();
        let mut want = b"bcdefgh".to_vec();
        want.extend([b'i'; 300]);
        want.extend(b"jk");
        assert_eq!(joined, want);
        assert_eq!(q.queued_bytes(), want.len());
    }

    #[test]
    fn queue_advances_across_chunks() {
        let mut q = OutQueue::new();
        q.push(Chunk::inline(b"ab"));
        q.push(Chunk::Shared(Arc::from(&b"cde"[..])));
        q.push(Chunk::Owned(b"f".to_vec()));
        assert_eq!(q.queued_bytes(), 6);
        q.advance(3);
        let mut s = [IoSlice::new(&[]); 8];
        let n = q.fill_slices(&mut s);
        let joined: Vec<u8> = s[..n].iter().flat_map(|x| x.iter().copied()).collect();
        assert_eq!(joined, b"def");
        q.advance(3);
        assert!(q.is_empty());
    }

    #[test]
    fn inline_falls_back_to_owned_when_long() {
        assert!(matches!(Chunk::inline(&[1u8; 20]), Chunk::Owned(_)));
        assert_eq!(Chunk::inline(b"xy").as_slice(), b"xy");
    }
}
