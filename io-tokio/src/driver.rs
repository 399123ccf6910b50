//! [`Driver`] on tokio: listeners and signals.

use crate::{TokioRuntime, TokioSockets, TokioTransport};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use mta_sts_core::service::{BoxStream, Transport};
use mta_sts_host::{Connections, Driver};
use std::io;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The tokio driver of the programs and of embedding applications.
#[derive(Clone, Debug)]
pub struct TokioDriver {
    handle: Handle,
}

impl TokioDriver {
    /// A driver on `handle`'s runtime.
    pub fn new(handle: Handle) -> Self {
        TokioDriver { handle }
    }

    /// A driver on the runtime of the calling task.
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`Handle::current`] does.
    pub fn current() -> Self {
        TokioDriver::new(Handle::current())
    }
}

impl Driver for TokioDriver {
    type Rt = TokioRuntime;

    fn runtime(&self) -> TokioRuntime {
        TokioRuntime::new(self.handle.clone())
    }

    fn transport(&self, roots: mta_sts_host::TlsRoots) -> Arc<dyn Transport> {
        Arc::new(TokioTransport::new(TokioSockets, roots))
    }

    fn tcp_incoming(&self, listener: std::net::TcpListener) -> io::Result<Connections> {
        let _context = self.handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| {
                // Replies are small and latency-bound.
                let _ = stream.set_nodelay(true);
                Box::new(stream.compat()) as BoxStream
            });
            Some((accepted, listener))
        });
        Ok(incoming.boxed())
    }

    fn unix_incoming(&self, listener: std::os::unix::net::UnixListener) -> io::Result<Connections> {
        let _context = self.handle.enter();
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener
                .accept()
                .await
                .map(|(stream, _)| Box::new(stream.compat()) as BoxStream);
            Some((accepted, listener))
        });
        Ok(incoming.boxed())
    }

    fn hangup_signals(&self) -> io::Result<futures::stream::BoxStream<'static, ()>> {
        let _context = self.handle.enter();
        let hup = signal(SignalKind::hangup())?;
        Ok(futures::stream::unfold(hup, |mut hup| async move {
            hup.recv().await.map(|()| ((), hup))
        })
        .boxed())
    }

    fn stop_signal(&self) -> io::Result<BoxFuture<'static, ()>> {
        let _context = self.handle.enter();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        .boxed())
    }
}
