//! The listener's connection bound: a connection is accepted only while fewer than
//! `max_connections` are open, so a crowd of idle or slow clients waits in the listen backlog
//! instead of holding memory and tasks without end. Each accepted stream carries its permit
//! and gives it back when the connection closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// `incoming`, accepting only while a permit of `max_connections` is free.
pub(crate) fn bounded<S>(incoming: S, max_connections: usize) -> impl Stream<Item = io::Result<Bounded>> + Send
where
    S: Stream<Item = io::Result<TcpStream>> + Send + Unpin,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    futures::stream::unfold((incoming, permits), |(mut incoming, permits)| async move {
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&permits).acquire_owned().await.ok()?;
        let accepted = incoming.next().await?;
        let item = accepted.map(|stream| Bounded {
            stream,
            _permit: permit,
        });
        Some((item, (incoming, permits)))
    })
}

/// An accepted connection holding one of the listener's permits until it is dropped.
#[derive(Debug)]
pub(crate) struct Bounded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Bounded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Bounded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
