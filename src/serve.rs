//! Listeners: accepts TCP (optionally TLS) connections, serves HTTP/1.1 and HTTP/2 with
//! hyper-util's auto builder, and hands each request to the gateway or the admin handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running gateway: its bound addresses and the switch that stops it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-auth listener, when configured.
    pub auth_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Stops accepting connections and background work.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Resolves when shutdown is requested.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the listeners, loads every issuer's keys (a failure is logged and retried in the
/// background; readiness stays false meanwhile), and starts serving.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let listen = config.listen;
    let tls = config.tls.clone().map(TlsAcceptor::from);
    let proxy = TcpListener::bind(listen.proxy)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.proxy,
            source,
        })?;
    let admin = TcpListener::bind(listen.admin)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.admin,
            source,
        })?;
    let (shutdown, _) = watch::channel(false);
    let gateway = Arc::new(Gateway::new(config, metrics));
    futures_util::future::join_all(gateway.issuers.iter().map(|k| k.refresh())).await;
    for keys in &gateway.issuers {
        keys.spawn_refresher(shutdown.subscribe());
    }
    if let Some(p) = gateway.permissions() {
        p.spawn_reloader(Duration::from_secs(2), shutdown.subscribe());
    }
    let running = Running {
        proxy_addr: proxy.local_addr().map_err(|source| ServeError::Bind {
            addr: listen.proxy,
            source,
        })?,
        admin_addr: admin.local_addr().map_err(|source| ServeError::Bind {
            addr: listen.admin,
            source,
        })?,
        auth_addr: None,
        gateway: gateway.clone(),
        shutdown,
    };
    let mut running = running;
    if let Some(addr) = listen.auth {
        let auth = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        running.auth_addr = Some(
            auth.local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?,
        );
        let g = gateway.clone();
        spawn_listener(
            auth,
            None,
            running.shutdown.subscribe(),
            move |req, peer| {
                let g = g.clone();
                async move { Ok::<_, Infallible>(g.handle_auth(req, peer).await) }
            },
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let g = gateway.clone();
    spawn_listener(
        proxy,
        tls,
        running.shutdown.subscribe(),
        move |req, peer| {
            let g = g.clone();
            async move { Ok::<_, Infallible>(g.handle(req, peer, scheme).await) }
        },
    );
    let g = gateway;
    spawn_listener(admin, None, running.shutdown.subscribe(), move |req, _| {
        let g = g.clone();
        async move { Ok::<_, Infallible>(crate::admin::handle(&g, &req)) }
    });
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, auth = ?running.auth_addr, tls = scheme == "https", "scopegate listening");
    Ok(running)
}

/// Accepts connections on `listener` until shutdown, serving each with `handler`.
pub fn spawn_listener<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                serve_connection(stream, peer, tls, handler).await;
            });
        }
    });
}

async fn serve_connection<H, F, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: H,
) where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |req| handler(req, peer));
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    builder
                        .serve_connection(TokioIo::new(tls_stream), service)
                        .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
