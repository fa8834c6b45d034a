//! The socket under a WebSocket: large reads while data flows, no read buffer while idle.
//!
//! tungstenite allocates its read buffer when the connection opens and keeps it for the
//! connection's life, and it reads at most that buffer's size per call. A 4 KiB buffer makes
//! every idle connection pay 4 KiB; a small one makes a large message cost one system call per
//! few hundred bytes. So the codec gets a small buffer ([`CODEC_BUFFER`]), and this wrapper
//! reads the socket in chunks of the configured size into a buffer that exists only while it
//! holds unread data. Small messages are read straight into the codec's buffer (no copy, no
//! allocation); once a read fills the codec's window, more is probably waiting, and the next
//! reads go through a chunk.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read buffer tungstenite keeps per connection.
pub(crate) const CODEC_BUFFER: usize = 256;

#[derive(Debug)]
pub(crate) struct ChunkedRead<IO> {
    io: IO,
    /// Read from the socket, not yet handed to the codec. No allocation when empty and idle.
    pending: BytesMut,
    /// How much to read from the socket at once through `pending` (a `u32`: 8 bytes less in
    /// every open socket).
    chunk: u32,
    /// The last read filled what was asked for: more data is probably waiting.
    busy: bool,
}

impl<IO> ChunkedRead<IO> {
    /// Reads `io` in chunks of `chunk` bytes, after `read_ahead` (bytes already read from it).
    pub(crate) fn new(io: IO, chunk: usize, read_ahead: bytes::Bytes) -> Self {
        let pending = if read_ahead.is_empty() { BytesMut::new() } else { BytesMut::from(read_ahead) };
        let chunk = u32::try_from(chunk.max(CODEC_BUFFER)).unwrap_or(u32::MAX);
        ChunkedRead { io, pending, chunk, busy: false }
    }

    /// The socket under this.
    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Whether everything read from the socket was handed on: more can only come from it.
    pub(crate) fn is_drained(&self) -> bool {
        self.pending.is_empty()
    }

    /// Hands what is pending to the codec; frees the buffer once drained, unless more is coming.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.pending.len().min(out.remaining());
        out.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        if self.pending.is_empty() && !self.busy {
            self.pending = BytesMut::new();
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ChunkedRead<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        let window = out.remaining();
        if !this.busy && window < CODEC_BUFFER {
            // The codec's window is what is left of its buffer (each frame it read keeps its
            // part until dropped): a frame that does not fit would be split over two system
            // calls (every sixth 38-byte frame was). Read as much as a fresh window would take;
            // what does not fit waits in `pending`.
            let mut stack = [std::mem::MaybeUninit::uninit(); CODEC_BUFFER];
            let mut read = ReadBuf::uninit(&mut stack);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let read = read.filled();
            this.busy = read.len() == CODEC_BUFFER;
            let (now, later) = read.split_at(read.len().min(window));
            out.put_slice(now);
            this.pending.extend_from_slice(later);
            return Poll::Ready(Ok(()));
        }
        if !this.busy || window >= this.chunk as usize {
            // Straight into the codec's buffer.
            let before = out.filled().len();
            let polled = Pin::new(&mut this.io).poll_read(cx, out);
            this.busy = matches!(polled, Poll::Ready(Ok(()))) && window > 0 && out.filled().len() - before == window;
            return polled;
        }
        this.pending.reserve(this.chunk as usize);
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.pending) {
            Poll::Ready(Ok(read)) if read > 0 => {
                this.busy = read >= this.chunk as usize;
                this.drain_into(out);
                Poll::Ready(Ok(()))
            }
            // End of stream, an error, or nothing to read yet: not busy, and no buffer kept.
            other => {
                this.busy = false;
                this.pending = BytesMut::new();
                other.map_ok(|_| ())
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ChunkedRead<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A socket that has `data` and counts the reads made of it.
    struct Counted<'a> {
        data: &'a [u8],
        reads: usize,
    }

    impl AsyncRead for Counted<'_> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.data).poll_read(cx, buf)
        }
    }

    /// Reads everything in windows of `window` bytes, as the codec does.
    async fn read_all(reader: &mut ChunkedRead<Counted<'_>>, window: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0; window];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_small_message_is_read_straight_through_without_a_buffer() {
        let data = b"\x81\x05hello";
        let mut reader = ChunkedRead::new(Counted { data, reads: 0 }, 4096, bytes::Bytes::new());
        let mut buf = [0; CODEC_BUFFER];
        assert_eq!(reader.read(&mut buf).await.unwrap(), data.len());
        assert_eq!(&buf[..data.len()], data);
        assert_eq!(reader.pending.capacity(), 0);
        assert!(!reader.busy);
    }

    #[tokio::test]
    async fn a_large_message_is_read_in_chunks_and_the_buffer_is_freed_after() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = ChunkedRead::new(Counted { data: &data, reads: 0 }, 16 << 10, bytes::Bytes::new());
        assert_eq!(read_all(&mut reader, CODEC_BUFFER).await, data);
        // One window straight through, then 16 KiB chunks, then the end: not one read per window.
        let reads = reader.io.reads;
        assert!(reads <= 2 + 100_000 / (16 << 10) + 1, "{reads} reads");
        assert_eq!(reader.pending.capacity(), 0, "no buffer kept once idle");
    }

    #[tokio::test]
    async fn a_frame_larger_than_what_is_left_of_the_codec_window_takes_one_read() {
        let frame: Vec<u8> = (0..38).collect();
        let mut reader = ChunkedRead::new(Counted { data: &frame, reads: 0 }, 4096, bytes::Bytes::new());
        let mut window = [0; 34];
        assert_eq!(reader.read(&mut window).await.unwrap(), 34);
        assert_eq!(reader.read(&mut window).await.unwrap(), 4);
        assert_eq!(&window[..4], &frame[34..]);
        assert_eq!(reader.io.reads, 1, "the rest came from what the first read kept");
        assert_eq!(reader.pending.capacity(), 0, "no buffer kept once drained");
        assert_eq!(reader.read(&mut window).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_window_as_large_as_a_chunk_is_filled_directly() {
        let data = vec![7u8; 10_000];
        let mut reader = ChunkedRead::new(Counted { data: &data, reads: 0 }, 1024, bytes::Bytes::new());
        assert_eq!(read_all(&mut reader, 4096).await, data);
        assert_eq!(reader.io.reads, 4, "three full windows and the end");
    }
}
