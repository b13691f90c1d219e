//! Running a future to completion on the calling thread, visibly to loom.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Wake, Waker};

use infra_common::sync::{Condvar, Mutex};

/// Wakes a thread blocked in [`block_on`]: a flag under `infra_common::sync`'s mutex and
/// condition variable, so that under loom the model sees every wake-up and reports a wait that
/// nobody will end as a deadlock.
struct Signal {
    woken: Mutex<bool>,
    ready: Condvar,
}

impl Wake for Signal {
    fn wake(self: std::sync::Arc<Self>) {
        *self.woken.lock() = true;
        self.ready.notify_one();
    }
}

/// Polls `future` on this thread until it is ready, sleeping between polls until it is woken.
///
/// For models and tests of async code without a runtime: under `--cfg infra_loom` the sleep
/// is on loom's condition variable, so a lost wake-up is a deadlock the model reports.
///
/// ```
/// assert_eq!(infra_testkit::block_on(async { 6 * 7 }), 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    // `Waker::from` takes a `std` `Arc`; the state it wakes is `infra_common::sync`'s.
    let signal = std::sync::Arc::new(Signal {
        woken: Mutex::new(false),
        ready: Condvar::new(),
    });
    let waker = Waker::from(std::sync::Arc::clone(&signal));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        let mut woken = signal.woken.lock();
        while !*woken {
            signal.ready.wait(&mut woken);
        }
        *woken = false;
    }
}
