//! Binding a service's two listeners and shutting them down gracefully.
//!
//! One [`CancellationToken`] is the shutdown signal for the whole process: SIGINT/SIGTERM
//! cancel it ([`cancel_on_signals`]), both listeners stop accepting and finish the requests in
//! flight, background tasks (outbox relay, workers) watch the same token, and only then does
//! `main` flush telemetry.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

/// Why a listener could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, or not a local address).
    #[error(
        "cannot listen on {addr} ({variable}): {source}; is another instance running? set {variable} to another address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The environment variable that sets it.
        variable: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr`, naming `variable` in the error.
///
/// # Errors
/// [`ServeError::Bind`].
pub async fn bind(addr: SocketAddr, variable: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr,
            variable,
            source,
        })
}

/// Serves `app` on `app_listener` and `admin` on `admin_listener` until `shutdown` is
/// cancelled, then waits for in-flight requests to finish.
///
/// # Errors
/// [`ServeError::Io`] if a server fails.
pub async fn serve(
    app: Router,
    app_listener: TcpListener,
    admin: Router,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let app_server = axum::serve(app_listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let admin_server = axum::serve(admin_listener, admin)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .into_future();
    tokio::try_join!(app_server, admin_server)?;
    Ok(())
}

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
        }
        token.cancel();
    });
}

/// The local address of a bound listener, for logs and tests.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
