//! An open WebSocket's socket and protocol state, shared by its reader and its writer.
//!
//! Both halves are polled by the connection's one task, so they share one
//! [`WebSocketContext`] and the socket under a lock that is never contended in practice, and
//! drive the socket with the task's own [`Context`]. tokio-tungstenite's stream, split in two,
//! costs more on every message: a lock with its own waker between the halves, and two waker
//! proxies re-registered on every read and write (measured: ~4 % of an echo's server time).

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
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::server::chunked::ChunkedRead;

type Io = ChunkedRead<WsIo>;

/// The connection under an open WebSocket: the TCP stream itself for a plain connection, so
/// that a read or a write is a call on the socket (hyper's upgraded connection goes through a
/// boxed trait object and two adapters each time: ~4 % of the server's own work per echoed
/// message, callgrind), and hyper's upgraded connection for any other (TLS).
pub(super) enum WsIo {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl WsIo {
    /// The connection, and what hyper read of it past the handshake (the client's first
    /// frames, if it sent them without waiting for the answer).
    pub(super) fn new(upgraded: Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (WsIo::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (WsIo::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            WsIo::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            WsIo::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            WsIo::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
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
            WsIo::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WsIo::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            WsIo::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

struct Inner {
    io: Io,
    protocol: WebSocketContext,
    /// A read failed or the connection closed: the reader reports nothing more.
    ended: bool,
    /// The last write was accepted but could not reach the socket: flush before the next.
    blocked: bool,
}

/// The reading half: frames from the client.
pub(super) struct WsReader(Arc<Mutex<Inner>>);

/// The writing half: frames to the client, buffered by `feed` and written out by `flush`.
pub(super) struct WsWriter(Arc<Mutex<Inner>>);

/// The two halves of a server-side WebSocket on `io`.
pub(super) fn open(io: Io, config: WebSocketConfig) -> (WsReader, WsWriter) {
    let inner = Inner { io, protocol: WebSocketContext::new(Role::Server, Some(config)), ended: false, blocked: false };
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
        Ok(buf.filled().len())
    }
}

impl Write for Blocking<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
        f(&mut self.protocol, &mut Blocking { io: &mut self.io, cx })
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let flushed = std::task::ready!(pending_on_block(self.step(cx, |ws, io| ws.flush(io))));
        self.blocked = false;
        Poll::Ready(flushed)
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
        match std::task::ready!(pending_on_block(inner.step(cx, |ws, io| ws.read(io)))) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(err) => {
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
    /// Ready when a frame may be fed: an earlier write the socket did not take is written out
    /// first.
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut inner = lock(&self.0);
        if inner.blocked { inner.poll_flush(cx) } else { Poll::Ready(Ok(())) }
    }

    /// Buffers a frame (after [`poll_ready`](Self::poll_ready)); tungstenite writes its buffer
    /// out once it holds more than the configured write buffer size. A socket without room
    /// leaves it buffered, to be written by the next `poll_ready` or `poll_flush`.
    pub(super) fn start_send(&mut self, message: WsMessage, cx: &mut Context<'_>) -> Result<(), WsError> {
        let mut inner = lock(&self.0);
        match inner.step(cx, |ws, io| ws.write(io, message)) {
            Err(WsError::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => {
                inner.blocked = true;
                Ok(())
            }
            result => result,
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

    /// Feeds a frame, waiting for room.
    pub(super) async fn feed(&mut self, message: WsMessage) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        let mut message = Some(message);
        std::future::poll_fn(|cx| Poll::Ready(message.take().map_or(Ok(()), |message| self.start_send(message, cx))))
            .await
    }

    /// Writes out what is buffered (see [`poll_flush`](Self::poll_flush)).
    pub(super) async fn flush(&mut self) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}
