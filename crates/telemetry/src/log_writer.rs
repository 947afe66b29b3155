//! Log lines written in batches: one `write(2)` for many lines, no thread woken per line.
//!
//! Writing each line to stdout as it is logged costs a system call per line on the thread that
//! logs it (the request path), about 6 % of a saturated trivial server's CPU in `perf`. Handing
//! each line to a writer thread instead (as `tracing-appender`'s non-blocking writer does)
//! moves the write but wakes that thread for each line when the service is not saturated,
//! which measured *more* CPU per request than this writer (48.2 against 40.2 µs per request at
//! 15,000 requests/s with `bench/ab.sh`), and more than writing each line directly (41.4 µs
//! in another run; see `BENCHMARKS.md`).
//!
//! [`BatchedWriter`] appends each line to a shared buffer under a mutex (a copy, no system
//! call) and writes the buffer out:
//! - when it holds [`BatchedWriter::capacity`] bytes ([`DEFAULT_CAPACITY`] unless set), on
//!   the thread that filled it;
//! - at once after a `WARN` or `ERROR` line, so a warning or a failure is never held back;
//! - every interval ([`DEFAULT_INTERVAL`] unless set), from a thread of its own
//!   ([`FLUSH_THREAD_NAME`]);
//! - when its [`FlushGuard`] is dropped (at shutdown: [`crate::TelemetryGuard`] holds it).
//!
//! After the guard is dropped, each line is written as it is logged, so a task that logs
//! after shutdown loses nothing.
//!
//! Lines keep their order: whoever writes the buffer out holds the output's lock from taking
//! the buffer to the end of the write. What a process loses if it is killed with `SIGKILL`,
//! aborts, or calls [`std::process::exit`] (which runs no destructors) before the guard is
//! dropped is at most one interval of `INFO`-and-below lines: shut telemetry down before
//! exiting.
//!
//! With [`crate::init_with_writer`] (instead of [`crate::init`], which does this for you):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use telemetry::log_writer::BatchedWriter;
//! let (writer, flush) = BatchedWriter::stdout()?;
//! let guard = telemetry::init_with_writer(telemetry::TelemetryConfig::from_env("my-service")?, writer)?;
//! // … serve …
//! guard.shutdown().await?;
//! drop(flush); // writes what is still buffered; later lines are written at once
//! # Ok(())
//! # }
//! ```

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The name of the thread that writes the buffered lines out every interval.
pub const FLUSH_THREAD_NAME: &str = "log-flush";

/// The default bytes gathered before a write: 64 KiB.
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

/// The default longest time a line waits in the buffer: 100 ms.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The output. Lock order: `output`, then `pending`.
    output: Mutex<Box<dyn Write + Send>>,
    capacity: usize,
    /// Set when the guard is dropped: from then on every line is written at once (nothing
    /// would write it out later).
    unbuffered: AtomicBool,
}

impl Shared {
    /// Writes out what is pending, in order with every other flush.
    fn flush(&self) -> io::Result<()> {
        let mut output = lock(&self.output);
        let lines = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(self.capacity))
        };
        output.write_all(&lines)?;
        output.flush()
    }
}

/// A poisoned lock only means another thread panicked while logging: the bytes are still good.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`MakeWriter`] that batches log lines; see the [module docs](self).
///
/// Cloning is cheap (one `Arc`); every clone appends to the same buffer.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedWriter")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl BatchedWriter {
    /// A writer to `output` that writes whenever `capacity` bytes are waiting and at least
    /// every `interval`, and the guard that writes the rest when dropped.
    ///
    /// # Errors
    /// The flush thread could not be started (the process is out of threads or memory).
    pub fn new(
        output: impl Write + Send + 'static,
        capacity: usize,
        interval: Duration,
    ) -> io::Result<(Self, FlushGuard)> {
        let capacity = capacity.max(1);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(capacity)),
            output: Mutex::new(Box::new(output)),
            capacity,
            unbuffered: AtomicBool::new(false),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let flusher = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(FLUSH_THREAD_NAME.into())
            .spawn(move || {
                // Until the guard says stop (or is gone).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    // A failed write (stdout closed) loses those lines; there is no better
                    // place to report it than the stream that failed.
                    let _ = flusher.flush();
                }
            })?;
        let guard = FlushGuard {
            shared: Arc::clone(&shared),
            stop: Some(stop),
            thread: Some(thread),
        };
        Ok((Self { shared }, guard))
    }

    /// Batches lines to stdout with [`DEFAULT_CAPACITY`] and [`DEFAULT_INTERVAL`].
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn stdout() -> io::Result<(Self, FlushGuard)> {
        Self::new(io::stdout(), DEFAULT_CAPACITY, DEFAULT_INTERVAL)
    }

    /// The bytes gathered before the logging thread writes them itself.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }
}

/// One line's writer, from [`BatchedWriter`]'s [`MakeWriter`] implementation.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a BatchedWriter,
    /// Write out at once after this line (a `WARN` or `ERROR`).
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.writer.shared;
        let full = {
            let mut pending = lock(&shared.pending);
            pending.extend_from_slice(buf);
            pending.len() >= shared.capacity || shared.unbuffered.load(Ordering::Acquire)
        };
        if full {
            shared.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.shared.flush()
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.urgent {
            let _ = self.writer.shared.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            writer: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            writer: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// Writes the lines still buffered and stops the flush thread when dropped.
#[must_use = "dropping the guard stops the periodic flush"]
pub struct FlushGuard {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushGuard").finish_non_exhaustive()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        // Lines logged from now on (a task still running after shutdown) are written at once.
        self.shared.unbuffered.store(true, Ordering::Release);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.shared.flush() {
            eprintln!("cannot write the last log lines: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each `write` call apart.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Calls {
        fn joined(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn lines_wait_until_capacity_then_go_out_in_one_write() {
        let out = Calls::default();
        let (writer, _guard) = BatchedWriter::new(out.clone(), 30, HOUR).unwrap();
        writer.make_writer().write_all(b"line one\n").unwrap();
        writer.make_writer().write_all(b"line two\n").unwrap();
        assert_eq!(out.count(), 0, "nothing is written below capacity");
        writer
            .make_writer()
            .write_all(b"line three, the last\n")
            .unwrap();
        assert_eq!(out.count(), 1, "one write for the whole batch");
        assert_eq!(out.joined(), "line one\nline two\nline three, the last\n");
    }

    #[test]
    fn the_interval_writes_what_waits() {
        let out = Calls::default();
        let (writer, _guard) =
            BatchedWriter::new(out.clone(), 1 << 20, Duration::from_millis(20)).unwrap();
        writer.make_writer().write_all(b"soon\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.count() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.joined(), "soon\n");
    }

    #[test]
    fn dropping_the_guard_writes_the_rest() {
        let out = Calls::default();
        let (writer, guard) = BatchedWriter::new(out.clone(), 1 << 20, HOUR).unwrap();
        writer.make_writer().write_all(b"last words\n").unwrap();
        assert_eq!(out.count(), 0);
        drop(guard);
        assert_eq!(out.joined(), "last words\n");
    }

    #[test]
    fn after_the_guard_is_dropped_lines_are_written_at_once() {
        let out = Calls::default();
        let (writer, guard) = BatchedWriter::new(out.clone(), 1 << 20, HOUR).unwrap();
        writer.make_writer().write_all(b"before\n").unwrap();
        drop(guard);
        writer.make_writer().write_all(b"after shutdown\n").unwrap();
        assert_eq!(out.joined(), "before\nafter shutdown\n");
    }

    #[test]
    fn a_warning_is_written_at_once_with_what_came_before() {
        let out = Calls::default();
        let (writer, _guard) = BatchedWriter::new(out.clone(), 1 << 20, HOUR).unwrap();
        let (info, warn) = (event_at(Level::INFO), event_at(Level::WARN));
        writer.make_writer_for(&info).write_all(b"i\n").unwrap();
        assert_eq!(out.count(), 0, "INFO waits");
        writer.make_writer_for(&warn).write_all(b"w\n").unwrap();
        assert_eq!(out.joined(), "i\nw\n");
    }

    /// The metadata of an event at `level` (from no real callsite).
    fn event_at(level: Level) -> tracing::Metadata<'static> {
        tracing::Metadata::new(
            "event",
            "t",
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        )
    }

    struct NoCallsite;
    static CALLSITE: NoCallsite = NoCallsite;
    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }

    #[test]
    fn lines_from_many_threads_stay_whole_and_all_arrive() {
        let out = Calls::default();
        let (writer, guard) = BatchedWriter::new(out.clone(), 256, HOUR).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = &writer;
                s.spawn(move || {
                    for i in 0..500 {
                        let line = format!("thread {t} line {i:03}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let all = out.joined();
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..500)
                .map(|i| format!("thread {t} line {i:03}"))
                .collect();
            assert_eq!(mine, expected, "thread {t}'s lines, whole and in order");
        }
    }
}
