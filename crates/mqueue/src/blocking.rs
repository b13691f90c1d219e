//! Handing file work to tokio's blocking pool (feature `tokio`), so that an fsync, a rename or
//! a file's creation never stalls the tasks of the worker thread that asked for it.

/// Runs `work` on tokio's blocking pool and waits for it (outside a runtime, runs it on this
/// thread). It runs to its end even if the future is dropped; a panic in it is resumed here,
/// as if it had run on this thread. `None` if the runtime shut down before it started.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Some(work());
    };
    match runtime.spawn_blocking(work).await {
        Ok(done) => Some(done),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
    }
}
