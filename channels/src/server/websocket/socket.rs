//! An open WebSocket's socket and protocol state, shared by its reader and its writer.
//!
//! Both halves are polled by the connection's one task, so they share one
//! [`WebSocketContext`] and the socket under a lock that is never contended in practice, and
//! drive the socket with the task's own [`Context`]. tokio-tungstenite's stream, split in two,
//! cost more on every message: a lock with its own waker between the halves, and two waker
//! proxies re-registered on every read and write (callgrind: 6,593 → 5,917 instructions per
//! echoed message without them).
//!
//! tungstenite reads the frames, answers pings and close frames, and writes those replies and
//! the server's close frame. Data frames (and keepalive pings) are written here: each frame's
//! header and its payload, not copied, in one vectored write per batch, never interleaved with
//! tungstenite's replies.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::deque::InlineDeque;
use crate::server::chunked::ChunkedRead;

type Io = ChunkedRead<WsIo>;

/// The connection under an open WebSocket: the TCP stream itself for a plain connection, so
/// that a read or a write is a call on the socket (hyper's upgraded connection goes through a
/// boxed trait object and two adapters each time: ~4 % of the server's own work per echoed
/// message, callgrind), and hyper's upgraded connection for any other (TLS; boxed, so that a
/// plain socket does not carry its room: 16 bytes).
pub(super) enum WsIo {
    Tcp(TcpStream),
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl WsIo {
    /// The connection, and what hyper read of it past the handshake (the client's first
    /// frames, if it sent them without waiting for the answer).
    pub(super) fn new(upgraded: Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (WsIo::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (WsIo::Upgraded(Box::new(TokioIo::new(upgraded))), Bytes::new()),
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WsIo::Tcp(io) => io.is_write_vectored(),
            WsIo::Upgraded(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_flush(cx),
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            WsIo::Upgraded(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

struct Inner {
    io: Io,
    protocol: WebSocketContext,
    /// A read failed or the connection closed: the reader reports nothing more.
    ended: bool,
    /// Data frames fed and not yet written, written here with one vectored write per flush:
    /// the payload is not copied, and nothing keeps the room a large message took (tungstenite
    /// formats every frame into one buffer whose capacity it never gives back).
    out: InlineDeque<Outgoing>,
    /// A close frame to send once `out` is written: it must come after them. (Boxed: it is
    /// given once, at the end, and every open socket would keep room for it.)
    close: Option<Box<Option<CloseFrame>>>,
    /// tungstenite may have something to write: a reply to what was read (a pong, the close
    /// reply), or the close frame given to it. Flushing it otherwise costs ~100 instructions
    /// per message for nothing.
    replies: bool,
    /// Bytes handed to tungstenite less the frames of the messages it returned: at least what
    /// its buffer holds. Exact while each message is one frame with a minimal header (what
    /// clients send); a fragmented message leaves it above, for good (wrapping: a subtraction
    /// never leaves 0 by mistake). 0: tungstenite holds nothing, only the socket can have more.
    unparsed: u64,
}

/// The bytes of the frame that carried `message` to a server: its payload and a masked header
/// with the shortest length encoding (at most what tungstenite read for it).
fn frame_len(message: &WsMessage) -> u64 {
    let payload = match message {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(bytes) | WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => bytes.len(),
        WsMessage::Close(None) => 0,
        WsMessage::Close(Some(frame)) => 2 + frame.reason.len(),
        WsMessage::Frame(frame) => frame.payload().len(),
    };
    let extended = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    (2 + extended + 4 + payload) as u64
}

/// A server data frame on its way out: its header, its payload, and how much of the two went.
struct Outgoing {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
    written: usize,
}

impl Outgoing {
    /// An unmasked, final frame (RFC 6455 section 5.2) with `opcode`.
    fn new(opcode: u8, payload: Bytes) -> Self {
        let mut header = [0u8; 10];
        header[0] = 0x80 | opcode;
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Outgoing { header, header_len, payload, written: 0 }
    }

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// What is left to write: the rest of the header, the rest of the payload.
    fn rest(&self) -> (&[u8], &[u8]) {
        let header = self.header();
        let in_header = self.written.min(header.len());
        (&header[in_header..], &self.payload[self.written - in_header..])
    }

    fn len(&self) -> usize {
        self.header().len() + self.payload.len()
    }
}

/// The reading half: frames from the client.
pub(super) struct WsReader(Arc<Mutex<Inner>>);

/// The writing half: frames to the client, queued by `start_send` and written by `poll_flush`.
pub(super) struct WsWriter(Arc<Mutex<Inner>>);

/// The two halves of a server-side WebSocket on `io`.
pub(super) fn open(io: Io, config: WebSocketConfig) -> (WsReader, WsWriter) {
    let inner = Inner {
        io,
        protocol: WebSocketContext::new(Role::Server, Some(config)),
        ended: false,
        out: InlineDeque::new(),
        close: None,
        replies: false,
        unparsed: 0,
    };
    let shared = Arc::new(Mutex::new(inner));
    (WsReader(shared.clone()), WsWriter(shared))
}

/// The lock: held only for one non-blocking step, so a panic inside it leaves nothing half done
/// that the next step cannot see (tungstenite keeps its state consistent between calls).
fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The socket as blocking I/O for tungstenite, polled with `cx`: "would block" means pending,
/// with the task's waker registered for the socket's readiness.
struct Blocking<'a, 'b> {
    io: &'a mut Io,
    cx: &'a mut Context<'b>,
    /// Counts what is read ([`Inner::unparsed`]).
    read: &'a mut u64,
    /// False while one of this module's frames is half written: tungstenite's replies wait
    /// (as if the socket were full) rather than land inside it.
    writes: bool,
}

fn would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Read for Blocking<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        would_block(Pin::new(&mut *self.io).poll_read(self.cx, &mut buf))?;
        *self.read = self.read.wrapping_add(buf.filled().len() as u64);
        Ok(buf.filled().len())
    }
}

impl Write for Blocking<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writes {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        would_block(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

/// A tungstenite result as a poll: "would block" is pending.
fn pending_on_block<T>(result: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match result {
        Err(WsError::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl Inner {
    fn step<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocketContext, &mut Blocking<'_, '_>) -> Result<T, WsError>,
    ) -> Result<T, WsError> {
        let writes = self.out.front().is_none_or(|frame| frame.written == 0);
        f(&mut self.protocol, &mut Blocking { io: &mut self.io, cx, read: &mut self.unparsed, writes })
    }

    /// Queues a data (or ping) frame, unless a close frame was sent or queued.
    fn queue(&mut self, opcode: u8, payload: Bytes) -> Result<(), WsError> {
        if !self.protocol.can_write() || self.close.is_some() {
            return Err(WsError::Protocol(ProtocolError::SendAfterClosing));
        }
        self.out.push_back(Outgoing::new(opcode, payload));
        Ok(())
    }

    /// Writes tungstenite's own frames (replies, the close frame) and this module's, in order.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        loop {
            // tungstenite's replies, between frames of ours (never inside one).
            if self.replies && self.out.front().is_none_or(|frame| frame.written == 0) {
                match pending_on_block(self.step(cx, |ws, io| ws.flush(io))) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.replies = false,
                    Poll::Ready(Err(err)) => {
                        // Closed (the client's close was answered) or broken: ours cannot go.
                        drop(self.out.take());
                        return Poll::Ready(Err(err));
                    }
                }
            }
            if self.out.is_empty() {
                let Some(frame) = self.close.take() else { return Poll::Ready(Ok(())) };
                self.replies = true;
                match pending_on_block(self.step(cx, |ws, io| ws.close(io, *frame))) {
                    // Queued in tungstenite, which writes it with its next flush.
                    Poll::Pending | Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                }
            }
            let mut written = std::task::ready!(self.write_out(cx))?;
            if written == 0 {
                return Poll::Ready(Err(WsError::Io(io::ErrorKind::WriteZero.into())));
            }
            while let Some(frame) = self.out.front_mut() {
                let left = frame.len() - frame.written;
                if written < left {
                    frame.written += written;
                    break;
                }
                written -= left;
                self.out.pop_front();
            }
        }
    }
}

/// The largest frame written with a plain send, copied whole (header and payload) into one
/// buffer on the stack.
const SMALL_FRAME: usize = 256;

/// Frames written per vectored write (two slices each: header and payload).
const BATCH_SLICES: usize = 64;

impl Inner {
    /// One vectored write of what `out` holds (the first [`BATCH_SLICES`] frames).
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        if self.out.len() == 1
            && let Some(frame) = self.out.front()
        {
            // One frame, the common case: no array of slices to fill.
            let (header, payload) = frame.rest();
            let len = header.len() + payload.len();
            if len <= SMALL_FRAME {
                // A small one is copied whole into one buffer: a plain send of it costs the
                // kernel ~80 ns less than a vectored write of two slices (perf), far more than
                // the copy.
                let mut whole = [0u8; SMALL_FRAME];
                whole[..header.len()].copy_from_slice(header);
                whole[header.len()..len].copy_from_slice(payload);
                return io.poll_write(cx, &whole[..len]);
            }
            return io.poll_write_vectored(cx, &[io::IoSlice::new(header), io::IoSlice::new(payload)]);
        }
        let mut slices = [io::IoSlice::new(&[]); 2 * BATCH_SLICES];
        let mut count = 0;
        for frame in self.out.iter().take(BATCH_SLICES) {
            let (header, payload) = frame.rest();
            for part in [header, payload] {
                if !part.is_empty() {
                    slices[count] = io::IoSlice::new(part);
                    count += 1;
                }
            }
        }
        io.poll_write_vectored(cx, &slices[..count])
    }
}

impl WsReader {
    /// The next frame; `None` once the connection is closed (after a close handshake, or after
    /// an error was returned). Replies to pings and to a close frame are queued and written by
    /// tungstenite as it reads.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, WsError>>> {
        let mut inner = lock(&self.0);
        if inner.ended {
            return Poll::Ready(None);
        }
        if inner.unparsed == 0
            && inner.io.is_drained()
            && !inner.replies
            && let WsIo::Tcp(socket) = inner.io.get_ref()
        {
            // Nothing read is left unparsed: only the socket can have a frame. Asking it costs
            // ~170 instructions less than a read through tungstenite that finds nothing (the
            // read after every message), and registers for its next data the same way. Not
            // while a reply to a ping or a close waits: tungstenite's next read writes it.
            let _ = std::task::ready!(socket.poll_read_ready(cx));
        }
        match std::task::ready!(pending_on_block(inner.step(cx, |ws, io| ws.read(io)))) {
            Ok(message) => {
                inner.unparsed = inner.unparsed.wrapping_sub(frame_len(&message));
                // A ping or a close frame gets a reply.
                inner.replies |= !message.is_text() && !message.is_binary();
                Poll::Ready(Some(Ok(message)))
            }
            Err(err) => {
                inner.replies = true;
                inner.ended = true;
                match err {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    err => Poll::Ready(Some(Err(err))),
                }
            }
        }
    }
}

impl WsWriter {
    /// Queues a frame, to be written by the next [`poll_flush`](Self::poll_flush): data frames
    /// and pings with the others queued (no copy), a close frame after them. Queuing never
    /// touches the socket: what a writer feeds between two flushes is what it holds.
    pub(super) fn start_send(&mut self, message: WsMessage) -> Result<(), WsError> {
        let mut inner = lock(&self.0);
        match message {
            WsMessage::Text(text) => inner.queue(0x1, Bytes::from(text)),
            WsMessage::Binary(bytes) => inner.queue(0x2, bytes),
            WsMessage::Ping(bytes) => inner.queue(0x9, bytes),
            WsMessage::Close(frame) => {
                if !inner.protocol.can_write() || inner.close.is_some() {
                    return Err(WsError::Protocol(ProtocolError::SendAfterClosing));
                }
                inner.close = Some(Box::new(frame));
                Ok(())
            }
            // tungstenite answers pings itself; nothing else is sent by the server.
            WsMessage::Pong(_) | WsMessage::Frame(_) => Err(WsError::Io(io::ErrorKind::InvalidInput.into())),
        }
    }

    /// Writes out what is buffered, and the replies (pong, close) the reader queued.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match std::task::ready!(lock(&self.0).poll_flush(cx)) {
            // The close handshake just completed: flushed, not an error.
            Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }

    /// Writes out what is buffered (see [`poll_flush`](Self::poll_flush)).
    pub(super) async fn flush(&mut self) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    #[test]
    fn frame_headers_parse_back_as_tungstenite_reads_them() {
        for (opcode, expected) in [(0x1, OpCode::Data(Data::Text)), (0x2, OpCode::Data(Data::Binary))] {
            for len in [0, 1, 125, 126, 65_535, 65_536, 1 << 20] {
                let frame = Outgoing::new(opcode, Bytes::from(vec![7u8; len]));
                let mut header = std::io::Cursor::new(frame.header().to_vec());
                let (parsed, length) = FrameHeader::parse(&mut header).unwrap().unwrap();
                assert!(parsed.is_final);
                assert_eq!(parsed.opcode, expected);
                assert_eq!(parsed.mask, None, "server frames are not masked");
                assert_eq!(length, len as u64);
                assert_eq!(frame.len(), frame.header().len() + len);
            }
        }
    }

    #[test]
    fn a_message_s_frame_length_is_what_a_client_sends_for_it() {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload = Bytes::from(vec![b'a'; len]);
            let messages = [
                (WsMessage::Binary(payload.clone()), Frame::message(payload.clone(), OpCode::Data(Data::Binary), true)),
                (WsMessage::Ping(payload.clone()), Frame::ping(payload.clone())),
            ];
            for (message, mut frame) in messages {
                frame.header_mut().mask = Some([1, 2, 3, 4]);
                assert_eq!(frame_len(&message), frame.len() as u64, "{len} bytes");
            }
        }
        let close = CloseFrame { code: 1000.into(), reason: "bye".into() };
        let mut frame = Frame::close(Some(close.clone()));
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        assert_eq!(frame_len(&WsMessage::Close(Some(close))), frame.len() as u64);
        assert_eq!(frame_len(&WsMessage::Close(None)), 6);
    }

    #[test]
    fn what_is_left_of_a_frame_follows_what_was_written() {
        let mut frame = Outgoing::new(0x2, Bytes::from_static(b"payload"));
        assert_eq!(frame.rest(), (&[0x82, 7][..], &b"payload"[..]));
        frame.written = 1;
        assert_eq!(frame.rest(), (&[7][..], &b"payload"[..]));
        frame.written = 4;
        assert_eq!(frame.rest(), (&[][..], &b"yload"[..]));
    }
}
