//! Handing file work to tokio's blocking pool (feature `tokio`), so that an fsync, a rename or
//! a file's creation never stalls the tasks of the worker thread that asked for it.

use infra_common::sync::{Arc, Mutex};

use crate::log::PoolWork;

/// Runs `work` on tokio's blocking pool and waits for it (outside a runtime, runs it on this
/// thread). It is handed over through `pool`, the work of the handle this future borrows (see
/// `PoolWork::hand_over`): it runs to its end even if the future is dropped, and if the pool
/// has not started it when the handle is dropped, the drop runs it. A panic in it is resumed
/// here, as if it had run on this thread; if the runtime shut down before the pool started
/// it, it runs on this thread.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    pool: &PoolWork,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return work();
    };
    let done = Arc::new(Mutex::new(None));
    let handover = pool.hand_over({
        let done = Arc::clone(&done);
        move || *done.lock() = Some(work())
    });
    let on_pool = handover.clone();
    match runtime.spawn_blocking(move || on_pool.run()).await {
        Ok(_) => {}
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime shut down before the pool started it.
        Err(_) => {
            let _ = handover.run();
        }
    }
    // Only the drop of the handle this future borrows takes work the pool has not started,
    // and it cannot come while the future is polled: the work ran on the pool or here.
    done.lock()
        .take()
        .expect("handed-over work ran on the pool or on this thread")
}
