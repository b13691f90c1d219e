//! Carrying the current context across `.await` (feature `tokio`).
//!
//! A thread's current context does not follow a task: between two polls a task may move to
//! another worker thread, and other tasks run on this one. [`WithContext`] makes its context
//! current for the duration of each poll of the future it wraps, and [`spawn`] starts a tokio
//! task that runs in the spawner's current context.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::Context;
use crate::context::swap_current;

pin_project_lite::pin_project! {
    /// A future that runs every poll of `inner` with its context current; see
    /// [`FutureExt::with_context`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct WithContext<F> {
        #[pin]
        inner: F,
        // `None` only while a poll is running (the context is current then).
        context: Option<Context>,
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(context) = this.context.take() else {
            // Re-entrant poll from inside our own poll cannot happen: the future is borrowed.
            return this.inner.poll(cx);
        };
        // Swapping (rather than cloning) keeps each poll allocation-free. A guard puts both
        // contexts back even if the inner future panics.
        struct Restore<'a> {
            slot: &'a mut Option<Context>,
            previous: Option<Context>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(previous) = self.previous.take() {
                    *self.slot = Some(swap_current(previous));
                }
            }
        }
        let _restore = Restore {
            previous: Some(swap_current(context)),
            slot: this.context,
        };
        this.inner.poll(cx)
    }
}

/// Attaches contexts to futures.
pub trait FutureExt: Future + Sized {
    /// Runs this future with `context` current during each poll.
    ///
    /// ```
    /// use infra_trace_ctx::{Baggage, Context, FutureExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut baggage = Baggage::new();
    /// baggage.insert("tenant", "acme").unwrap();
    /// let cx = Context::new().with_baggage(baggage);
    /// let tenant = async {
    ///     tokio::task::yield_now().await;
    ///     Context::current().baggage().get("tenant").map(str::to_owned)
    /// }
    /// .with_context(cx)
    /// .await;
    /// assert_eq!(tenant.as_deref(), Some("acme"));
    /// # });
    /// ```
    fn with_context(self, context: Context) -> WithContext<Self> {
        WithContext {
            inner: self,
            context: Some(context),
        }
    }

    /// Runs this future with the caller's current context (captured now) during each poll.
    fn in_current_context(self) -> WithContext<Self> {
        self.with_context(Context::current())
    }
}

impl<F: Future> FutureExt for F {}

/// Spawns `future` on the current tokio runtime, running in the caller's current context.
///
/// # Panics
///
/// Like `tokio::spawn`, if called outside a tokio runtime.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_context())
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{SpanContext, SpanId, TraceFlags, TraceId};

    fn make_cx() -> (Context, TraceId) {
        let trace_id = TraceId::random();
        let span = SpanContext::new(trace_id, SpanId::random(), TraceFlags::SAMPLED);
        (Context::new().with_span(span), trace_id)
    }

    fn current_trace() -> Option<TraceId> {
        Context::map_current(|cx| cx.span().map(SpanContext::trace_id))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn context_follows_the_task_across_awaits_and_threads() {
        let (cx, trace_id) = make_cx();
        let seen = spawn(
            async move {
                let mut seen = Vec::new();
                for _ in 0..20 {
                    seen.push(current_trace());
                    tokio::task::yield_now().await;
                }
                seen
            }
            .with_context(cx),
        )
        .await
        .unwrap();
        assert!(seen.iter().all(|t| *t == Some(trace_id)));
        assert_eq!(current_trace(), None, "the test's own context is untouched");
    }

    #[tokio::test]
    async fn spawn_captures_the_callers_context_and_restores_it() {
        let (cx, trace_id) = make_cx();
        let handle = {
            let _guard = cx.attach();
            spawn(async { current_trace() })
        };
        assert_eq!(current_trace(), None);
        assert_eq!(handle.await.unwrap(), Some(trace_id));
        let (other, other_id) = make_cx();
        let _guard = other.attach();
        let inner = async { current_trace() }.with_context(Context::new()).await;
        assert_eq!(inner, None);
        assert_eq!(current_trace(), Some(other_id), "restored after the poll");
    }
}
