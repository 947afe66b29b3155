//! Where export work runs: on threads of its own, optionally at a lower CPU priority.
//!
//! Turning spans and log records into OTLP protobuf and sending them is most of what telemetry
//! costs (see `BENCHMARKS.md`). Left to the defaults, part of it runs on the service's own
//! runtime: the gRPC exporter's connection task (which encodes every batch) is spawned on
//! whichever tokio runtime is current at start-up, so a batch of 512 spans holds one of the
//! service's worker threads for about a millisecond. Here:
//!
//! - a single-threaded tokio runtime on its own OS thread, `otel-export`;
//!   the gRPC exporters are built inside it, so their connections (encoding included) are
//!   driven there, and `telemetry::init` no longer needs to be called inside a runtime;
//! - that thread, and the SDK's batch-processor threads (which convert spans and records to
//!   protobuf), can run [`export_nice`](crate::TelemetryConfig::export_nice) steps nicer than
//!   the service (Linux: per-thread [nice value][nice]), so that when a request and an export
//!   want the same core, the request runs first.
//!
//! The trade-off of a nicer export: a service that keeps its cores busy gives export only a
//! small share of them (about 10 % at nice +10), so under sustained saturation spans queue up
//! and, past `OTEL_BSP_MAX_QUEUE_SIZE`, are dropped and counted in
//! `otel_sdk_processor_span_processed_total{error_type="queue_full"}`. Measured on one
//! saturated core (`bench/export-priority.sh`, medians of three alternated rounds), nice +10
//! served 18 % more requests per second on a trivial route, but the receiver got 0.37 spans per
//! request instead of 0.68; at half load on a 200 µs route, latency moved within the run-to-run
//! noise. Losing spans is the wrong default for a tool that exists to show them, so the
//! default is 0, the service's own priority.
//!
//! [nice]: https://man7.org/linux/man-pages/man7/sched.7.html

use std::cell::Cell;
use std::io;
use std::thread::JoinHandle;

/// The name of the thread that drives the OTLP exporters' connections.
pub const EXPORT_THREAD_NAME: &str = "otel-export";

/// How long the stopped runtime waits for its remaining tasks before abandoning them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// A current-thread tokio runtime on its own thread ([`EXPORT_THREAD_NAME`]); stops (and joins
/// its thread) when dropped, cancelling whatever it still runs, so drop it after the providers
/// have flushed.
pub(crate) struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ExportRuntime {
    /// Starts the thread, `nice` steps nicer than the calling thread.
    ///
    /// # Errors
    /// The OS refused a thread, or the runtime could not be built (no epoll, say).
    pub(crate) fn start(nice: u8) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(EXPORT_THREAD_NAME.into())
            .spawn(move || {
                lower_current_thread_priority(nice);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // The providers have flushed; whatever is left (a connection attempt stuck in
                // DNS, say) must not hold up the process's exit.
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the export thread ended while starting"))??;
        Ok(Self {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The runtime to build exporters in (`let _entered = runtime.handle().enter();`).
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Lowers the calling thread's priority by `nice` steps, once per thread (later calls do
/// nothing). For the SDK's batch-processor threads, which the SDK creates: the exporters call
/// it at their first export, which always runs on that thread.
pub(crate) fn lower_this_export_thread_once(nice: u8) {
    if nice == 0 {
        return;
    }
    LOWERED.with(|done| {
        if !done.replace(true) {
            lower_current_thread_priority(nice);
        }
    });
}

/// Adds `nice` to the calling thread's nice value (Linux keeps one per thread). Lowering a
/// priority needs no privilege; on failure (or off Linux) the thread keeps its priority.
fn lower_current_thread_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `nice(2)` takes an integer and changes only the calling thread's nice value
        // on Linux (NPTL); no memory is shared with the call.
        let _ = unsafe { libc::nice(i32::from(nice)) };
    }
}

/// The nice value of every thread of this process named `name` (Linux, from
/// `/proc/self/task/*/stat`). For tests and diagnostics.
#[doc(hidden)]
pub fn thread_nice_values(name: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            // The kernel keeps the first 15 bytes of a thread's name.
            let wanted = name.as_bytes().get(..15).unwrap_or(name.as_bytes());
            if comm.trim_end().as_bytes() != wanted {
                return None;
            }
            nice_of_stat(&std::fs::read_to_string(task.path().join("stat")).ok()?)
        })
        .collect()
}

/// The nice value in a `/proc/<pid>/task/<tid>/stat` (or `/proc/thread-self/stat`) line.
#[doc(hidden)]
pub fn nice_of_stat(stat: &str) -> Option<i32> {
    // Fields after the `(comm)`: state is field 3, nice is field 19.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(16)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_thread_runs_nicer_and_stops_on_drop() {
        let runtime = ExportRuntime::start(5).expect("export runtime");
        let value = runtime
            .handle()
            .block_on(async { tokio::spawn(async { 42 }).await.unwrap() });
        assert_eq!(value, 42);
        if cfg!(target_os = "linux") {
            let own = thread_nice_values(EXPORT_THREAD_NAME);
            assert_eq!(own.len(), 1, "one export thread: {own:?}");
            assert!(own[0] >= 5, "nice value {own:?}");
        }
        drop(runtime);
        // Joined; /proc may list the thread for a moment longer.
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            thread_nice_values(EXPORT_THREAD_NAME).is_empty()
        });
        assert!(gone, "the export thread ends when the runtime is dropped");
    }
}
