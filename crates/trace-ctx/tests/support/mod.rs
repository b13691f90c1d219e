//! Shared by the export tests: an exporter that waits at a gate, and bounded polling.
#![allow(dead_code, unreachable_pub, reason = "each test target uses a part")]

pub mod receiver;

use std::time::{Duration, Instant};

use infra_common::sync::{Arc, Condvar, Mutex, thread};
use infra_trace_ctx::{ExportError, MemoryExporter, SpanBatchExporter, SpanData};

/// Polls `condition` until it holds; fails the test after a generous bound.
pub fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached in 30 s");
        thread::yield_now();
    }
}

/// Holds every exporter that reaches it while it is closed (as it starts).
#[derive(Clone, Debug, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    /// How many callers are waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.inner.0.lock().waiting
    }

    /// Lets every caller through until [`Gate::close`].
    pub fn open(&self) {
        self.inner.0.lock().open = true;
        self.inner.1.notify_all();
    }

    /// Holds callers that arrive from now on again.
    pub fn close(&self) {
        self.inner.0.lock().open = false;
    }

    fn pass(&self) {
        let mut state = self.inner.0.lock();
        state.waiting += 1;
        while !state.open {
            self.inner.1.wait(&mut state);
        }
        state.waiting -= 1;
    }
}

/// Waits at a gate, then keeps the batch.
#[derive(Clone, Debug)]
pub struct GatedExporter {
    gate: Gate,
    pub spans: MemoryExporter,
}

impl GatedExporter {
    pub fn new(gate: &Gate) -> Self {
        Self {
            gate: gate.clone(),
            spans: MemoryExporter::new(),
        }
    }
}

impl SpanBatchExporter for GatedExporter {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.gate.pass();
        self.spans.export_batch(batch)
    }
}
