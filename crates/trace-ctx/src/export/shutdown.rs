//! The signal a batch processor raises when its shutdown deadline passes, so an exporter
//! waiting to retry stops waiting.
//!
//! OpenTelemetry's SDK specification has a span processor's `Shutdown` include the effects of
//! `ForceFlush` (every queued span gets its export) and complete or abort within a timeout.
//! So the signal is raised when that timeout passes, not when shutdown begins: until then
//! the queued spans are owed their retries; after it, nobody waits for them any more, and an
//! exporter that kept retrying would only hold the background thread past its process's exit.

use std::fmt;
use std::time::Duration;

use infra_common::sync::{Arc, Condvar, Mutex};

/// Raised once by a [`BatchSpanProcessor`](crate::BatchSpanProcessor) whose shutdown (or
/// drop) ran out of time; handed to its exporter through
/// [`SpanBatchExporter::watch_shutdown`](crate::SpanBatchExporter::watch_shutdown). Clones
/// share one flag.
///
/// ```
/// use std::time::Duration;
/// use infra_trace_ctx::ShutdownSignal;
///
/// let signal = ShutdownSignal::new();
/// assert!(!signal.wait_timeout(Duration::from_millis(1)), "not raised: the wait runs out");
/// signal.clone().raise();
/// assert!(signal.is_raised());
/// assert!(signal.wait_timeout(Duration::from_secs(3600)), "raised: no wait at all");
/// ```
#[derive(Clone)]
pub struct ShutdownSignal {
    inner: Arc<Flag>,
}

struct Flag {
    raised: Mutex<bool>,
    changed: Condvar,
}

impl ShutdownSignal {
    /// A signal not raised yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Flag {
                raised: Mutex::new(false),
                changed: Condvar::new(),
            }),
        }
    }

    /// Raises the signal for every clone and wakes whoever waits on it; it stays raised.
    pub fn raise(&self) {
        *self.inner.raised.lock() = true;
        self.inner.changed.notify_all();
    }

    /// Whether [`raise`](Self::raise) was called.
    pub fn is_raised(&self) -> bool {
        *self.inner.raised.lock()
    }

    /// Waits until the signal is raised or `timeout` passes, whichever is first; returns
    /// whether it is raised. This is what an exporter waits on between two attempts.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut raised = self.inner.raised.lock();
        // The flag is checked under the lock the raiser takes, so a raise cannot slip in
        // between the check and the wait. A spurious wake-up starts the wait over: it may
        // lengthen a wait that is not cut short, never shorten one.
        while !*raised {
            if self.inner.changed.wait_timeout(&mut raised, timeout) {
                break;
            }
        }
        *raised
    }
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("raised", &self.is_raised())
            .finish()
    }
}
