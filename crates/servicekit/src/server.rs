//! Binding a service's two listeners and shutting them down gracefully.
//!
//! One [`CancellationToken`] is the shutdown signal for the whole process: SIGINT/SIGTERM
//! cancel it ([`cancel_on_signals`]), both listeners stop accepting and finish the requests in
//! flight, background tasks (outbox relay, workers) watch the same token, and only then does
//! `main` flush telemetry.
//!
//! A service's `start` binds its [`Listeners`], spawns one task that serves them and stops
//! everything else the service runs, and returns a [`Running`] around that task.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
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
    /// The address of a bound listener could not be read.
    #[error("reading the {listener} listener's address: {source}")]
    LocalAddr {
        /// `app` or `admin`.
        listener: &'static str,
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

/// A service's two bound listeners: the app listener (`LISTEN_ADDR`) and the admin listener
/// (`ADMIN_LISTEN_ADDR`), with the addresses they really listen on.
#[derive(Debug)]
pub struct Listeners {
    /// The app listener's address (the real port when 0 was asked for).
    pub app_addr: SocketAddr,
    /// The admin listener's address (the real port when 0 was asked for).
    pub admin_addr: SocketAddr,
    app: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds `app` and then `admin` (port 0 picks a free port).
    ///
    /// # Errors
    /// [`ServeError::Bind`] naming `LISTEN_ADDR` or `ADMIN_LISTEN_ADDR`, or
    /// [`ServeError::LocalAddr`].
    pub async fn bind(app: SocketAddr, admin: SocketAddr) -> Result<Self, ServeError> {
        let app = bind(app, "LISTEN_ADDR").await?;
        let admin = bind(admin, "ADMIN_LISTEN_ADDR").await?;
        let app_addr = app.local_addr().map_err(|source| ServeError::LocalAddr {
            listener: "app",
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| ServeError::LocalAddr {
            listener: "admin",
            source,
        })?;
        Ok(Self {
            app_addr,
            admin_addr,
            app,
            admin,
        })
    }

    /// [`serve`]s `app` and `admin` on these listeners until `shutdown` is cancelled, then
    /// waits for in-flight requests to finish.
    ///
    /// # Errors
    /// [`ServeError::Io`] if a server fails.
    pub async fn serve(
        self,
        app: Router,
        admin: Router,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        serve(app, self.app, admin, self.admin, shutdown).await
    }
}

/// A started service: where it listens, and the task that ends once it has stopped.
///
/// Each service's `start` spawns that task: it serves the listeners and, after they close,
/// waits for the service's background work (workers, relays) and closes its database, so
/// [`Running::wait`] returning means the whole service has stopped.
#[derive(Debug)]
pub struct Running {
    /// The app listener's address (the real port when 0 was asked for).
    pub app_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    service: &'static str,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The service called `service` (named in errors), listening on `app_addr` and
    /// `admin_addr`, that has stopped when `task` ends.
    pub fn new(
        service: &'static str,
        app_addr: SocketAddr,
        admin_addr: SocketAddr,
        task: JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            app_addr,
            admin_addr,
            service,
            task,
        }
    }

    /// Waits until the service has stopped: after the shutdown token is cancelled (or a
    /// listener fails) the listeners finish their requests in flight, and the service's
    /// background work stops.
    ///
    /// # Errors
    /// The service's error (a listener that failed while serving, for instance), or its task's
    /// panic.
    pub async fn wait(self) -> anyhow::Result<()> {
        let service = self.service;
        self.task
            .await
            .with_context(|| format!("the {service} service's task panicked or was cancelled"))?
    }
}

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM, and logs which.
pub fn cancel_on_signals(token: CancellationToken) {
    let _ = watch_signals(token);
}

/// The second SIGINT/SIGTERM a process receives, heard by the listener [`watch_signals`]
/// registered (so none after the first is missed). For a supervisor that stops gracefully on
/// the first signal and gives up waiting on the second.
#[derive(Clone, Debug)]
pub struct SignalWatch {
    second: CancellationToken,
    second_name: Arc<std::sync::OnceLock<&'static str>>,
}

impl SignalWatch {
    /// Completes on the second signal (at once if it already came); its name (`"SIGINT"`,
    /// `"SIGTERM"`).
    pub async fn second(&self) -> &'static str {
        self.second.cancelled().await;
        self.second_name.get().copied().unwrap_or("signal")
    }
}

/// Starts listening for SIGINT (Ctrl-C) and SIGTERM now, on one listener: the first cancels
/// `stop` and is logged at `info`; the second completes [`SignalWatch::second`]. Call it inside
/// a tokio runtime. Off Unix, only Ctrl-C, listened for from the task's first poll.
pub fn watch_signals(stop: CancellationToken) -> SignalWatch {
    let watch = SignalWatch {
        second: CancellationToken::new(),
        second_name: Arc::default(),
    };
    // Registered here, not in the task: listening starts before this function returns.
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    #[cfg(not(unix))]
    let mut signals = ();
    let w = watch.clone();
    tokio::spawn(async move {
        let first = next_signal(&mut signals).await;
        tracing::info!("{first} received, shutting down");
        stop.cancel();
        let second = next_signal(&mut signals).await;
        let _ = w.second_name.set(second);
        w.second.cancel();
    });
    watch
}

/// The next SIGINT or SIGTERM on listeners registered earlier; its name.
#[cfg(unix)]
async fn next_signal(
    (interrupt, terminate): &mut (
        Option<tokio::signal::unix::Signal>,
        Option<tokio::signal::unix::Signal>,
    ),
) -> &'static str {
    async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
        match signal {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    tokio::select! {
        () = recv(interrupt) => "SIGINT",
        () = recv(terminate) => "SIGTERM",
    }
}

/// Off Unix: the next Ctrl-C.
#[cfg(not(unix))]
async fn next_signal(_: &mut ()) -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Waits for the first SIGINT (Ctrl-C) or SIGTERM and returns its name (`"SIGINT"`,
/// `"SIGTERM"`). For a process that has other reasons to stop as well: wait for all of them in
/// one `select!` and log the one that came first (see [`cancel_on_signals`]). Off Unix, only
/// Ctrl-C. It listens from its first poll; see [`watch_signals`] for a listener that starts
/// at once and hears a second signal too.
pub async fn shutdown_signal() -> &'static str {
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
        _ = ctrl_c => "SIGINT",
        _ = term => "SIGTERM",
    }
}

/// The local address of a bound listener, for logs and tests.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn running_waits_for_the_service_task_and_names_the_service_when_it_panics() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let ok = Running::new("demo", addr, addr, tokio::spawn(async { Ok(()) }));
        ok.wait().await.unwrap();
        let failed = Running::new(
            "demo",
            addr,
            addr,
            tokio::spawn(async { Err(anyhow::anyhow!("listener failed")) }),
        );
        assert_eq!(
            failed.wait().await.unwrap_err().to_string(),
            "listener failed"
        );
        let task: JoinHandle<anyhow::Result<()>> = tokio::spawn(async { panic!("boom") });
        let panicked = Running::new("demo", addr, addr, task);
        let err = panicked.wait().await.unwrap_err().to_string();
        assert_eq!(err, "the demo service's task panicked or was cancelled");
    }

    #[tokio::test]
    async fn listeners_report_their_real_ports_and_stop_on_shutdown() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(any, any).await.unwrap();
        assert_ne!(listeners.app_addr.port(), 0);
        assert_ne!(listeners.admin_addr.port(), 0);
        assert_ne!(listeners.app_addr, listeners.admin_addr);
        let taken = listeners.app_addr;
        let err = Listeners::bind(any, taken).await.unwrap_err();
        assert!(err.to_string().contains("ADMIN_LISTEN_ADDR"), "{err}");
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        listeners
            .serve(Router::new(), Router::new(), shutdown)
            .await
            .unwrap();
    }
}
