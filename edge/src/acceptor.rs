//! The edge's TCP acceptor: poem's, plus `TCP_NODELAY` on every connection, so small frames
//! (acks, pushes) leave at once instead of waiting for Nagle's algorithm.

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::{TcpListener, TcpStream};

pub struct NoDelayAcceptor {
    local_addr: LocalAddr,
    listener: TcpListener,
}

impl NoDelayAcceptor {
    pub fn from_std(listener: std::net::TcpListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let local_addr = LocalAddr(listener.local_addr()?.into());
        Ok(Self {
            local_addr,
            listener: TcpListener::from_std(listener)?,
        })
    }
}

impl Acceptor for NoDelayAcceptor {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local_addr.clone()]
    }

    async fn accept(&mut self) -> std::io::Result<(TcpStream, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, peer) = self.listener.accept().await?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Ok((
            stream,
            self.local_addr.clone(),
            RemoteAddr(peer.into()),
            Scheme::HTTP,
        ))
    }
}
