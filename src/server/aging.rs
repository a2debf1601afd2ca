//! Connection ageing (the reference's `GRPC_MAX_CONNECTION_AGE` and
//! `_GRACE`): at the age, tonic tells the client to go away (an HTTP/2
//! GOAWAY) and lets its requests finish; at age + grace, [`Aged`] ends the
//! connection whatever is left on it. (tonic's own grace setting does not
//! do this: with it set, the connection is cut at age + grace without any
//! GOAWAY first.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// A connection that fails every read and write once its time is up, which
/// makes the HTTP/2 server drop it.
pub struct Aged<IO> {
    inner: IO,
    /// `None`: never.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> Aged<IO> {
    /// `inner`, ended after `lifetime` (`None`: never).
    pub fn new(inner: IO, lifetime: Option<Duration>) -> Aged<IO> {
        Aged {
            inner,
            deadline: lifetime.map(|lifetime| Box::pin(tokio::time::sleep(lifetime))),
        }
    }

    /// Whether the time is up; registers the waker for when it will be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }
}

fn past_grace() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection past its maximum age and grace",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Aged<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(past_grace()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Aged<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(past_grace()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(past_grace()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Aged<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
