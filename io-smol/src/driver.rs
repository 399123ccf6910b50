//! [`Driver`] on smol: listeners from async-net, signals from async-signal.

use crate::{SmolRuntime, SmolSockets, SmolTransport};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use mta_sts_core::service::{BoxStream, Transport};
use mta_sts_host::{Connections, Driver};
use std::io;
use std::sync::Arc;

/// The smol driver of the programs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolDriver;

impl Driver for SmolDriver {
    type Rt = SmolRuntime;

    fn runtime(&self) -> SmolRuntime {
        SmolRuntime
    }

    fn transport(&self, roots: mta_sts_host::TlsRoots) -> Arc<dyn Transport> {
        Arc::new(SmolTransport::new(SmolSockets, roots))
    }

    fn tcp_incoming(&self, listener: std::net::TcpListener) -> io::Result<Connections> {
        let listener = async_net::TcpListener::try_from(listener)?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| {
                // Replies are small and latency-bound.
                let _ = stream.set_nodelay(true);
                Box::new(stream) as BoxStream
            });
            Some((accepted, listener))
        });
        Ok(incoming.boxed())
    }

    fn unix_incoming(&self, listener: std::os::unix::net::UnixListener) -> io::Result<Connections> {
        let listener = async_net::unix::UnixListener::try_from(listener)?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener
                .accept()
                .await
                .map(|(stream, _)| Box::new(stream) as BoxStream);
            Some((accepted, listener))
        });
        Ok(incoming.boxed())
    }

    fn hangup_signals(&self) -> io::Result<futures::stream::BoxStream<'static, ()>> {
        let signals = async_signal::Signals::new([async_signal::Signal::Hup])?;
        Ok(signals.map(|_| ()).boxed())
    }

    fn stop_signal(&self) -> io::Result<BoxFuture<'static, ()>> {
        let mut signals =
            async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
        Ok(async move {
            let _ = signals.next().await;
        }
        .boxed())
    }
}
