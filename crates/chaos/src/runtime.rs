//! The runtime faults, acting on the thread and memory of the request that meets them:
//! CPU burn, a blocking call on an async worker, a shared lock held across an await, and a
//! bounded memory leak.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::registry::Hit;

/// Burns CPU on the current thread for `duration` (a busy loop the optimiser cannot remove).
pub fn burn_cpu(duration: Duration) {
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < duration {
        for _ in 0..1000 {
            x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        std::hint::black_box(x);
    }
}

/// Blocks the current thread for `duration`: on an async worker thread this is the classic
/// mistake (a synchronous sleep, file read or DNS lookup) that stalls every task scheduled on
/// that thread.
pub fn blocking_call(duration: Duration) {
    std::thread::sleep(duration);
}

/// A lock shared by every request of a service, with `std::sync::Mutex` semantics: a waiter
/// blocks its thread (not just its task) until the holder lets go.
#[derive(Debug, Default)]
pub(crate) struct SharedLock {
    held: Mutex<bool>,
    released: Condvar,
}

/// Ownership of the [`SharedLock`]; released on drop.
struct LockGuard<'a>(&'a SharedLock);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        *self.0.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.0.released.notify_one();
    }
}

impl SharedLock {
    fn acquire_blocking(&self) -> LockGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        *held = true;
        LockGuard(self)
    }
}

/// Takes the service's shared lock the way a `std::sync::Mutex` would (blocking the worker
/// thread while waiting), then holds it across an await of `hold`: every request that meets
/// the fault is serialised behind the others.
///
/// The wait runs under [`tokio::task::block_in_place`] on a multi-threaded runtime, so the
/// runtime moves its other tasks to another thread instead of deadlocking (a real std mutex
/// held across an await can deadlock outright; this fault stops one step short of that).
pub(crate) async fn hold_lock_across_await(lock: &SharedLock, hold: Duration) {
    let multi_thread = matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    );
    let guard = if multi_thread {
        tokio::task::block_in_place(|| lock.acquire_blocking())
    } else {
        lock.acquire_blocking()
    };
    tokio::time::sleep(hold).await;
    drop(guard);
}

/// Memory leaked by one fault; freed when the fault ends.
#[derive(Debug, Default)]
pub(crate) struct Leak {
    chunks: Vec<Box<[u8]>>,
    bytes: u64,
}

impl Leak {
    /// Bytes held now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bytes_held(&self) -> u64 {
        self.bytes
    }
}

/// Leaks `spec.bytes` into the fault's own store, unless that would pass `spec.max_bytes`.
/// The pages are written so that they count in the resident set. Returns the bytes now held.
pub(crate) fn leak(hit: &Hit) -> u64 {
    let spec = hit.spec();
    let (bytes, cap) = (spec.bytes.unwrap_or(0), spec.max_bytes.unwrap_or(0));
    let mut store = hit.entry().leak.lock().unwrap_or_else(|p| p.into_inner());
    if store.bytes + bytes <= cap {
        // Non-zero bytes: a zeroed allocation may be backed by untouched pages.
        let chunk = vec![0xa5u8; bytes as usize].into_boxed_slice();
        store.chunks.push(chunk);
        store.bytes += bytes;
    }
    store.bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn burn_cpu_takes_about_the_time_asked() {
        let start = Instant::now();
        burn_cpu(Duration::from_millis(20));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_lock_serialises_its_holders() {
        let lock = Arc::new(SharedLock::default());
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    hold_lock_across_await(&lock, Duration::from_millis(50)).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "4 × 50 ms in turn, took {took:?}"
        );
    }
}
