//! Producer idempotence: message ids remembered over a window of recent sends.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use infra_common::RandomState;

/// Which recent message ids a queue remembers, to turn a repeated send into a no-op.
///
/// A send whose id is remembered is not stored again: it returns the offset of the first
/// send (see [`Sent::duplicate`](super::Sent::duplicate)). An id is forgotten when
/// `max_ids` newer ids have been sent, or, with `max_age`, once its first send is older than
/// that on the wall clock. A durable queue rebuilds the window on open from the last
/// `max_ids` messages of its log, so a producer retrying across a restart of the queue is
/// still deduplicated.
///
/// ```
/// use infra_mqueue::queue::DedupWindow;
/// use std::time::Duration;
///
/// let window = DedupWindow::new(100_000).max_age(Duration::from_secs(3600));
/// assert_eq!(window.max_ids(), 100_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupWindow {
    max_ids: usize,
    max_age: Option<Duration>,
}

impl DedupWindow {
    /// Remembers the last `max_ids` ids (at least one).
    pub fn new(max_ids: usize) -> Self {
        Self {
            max_ids: max_ids.max(1),
            max_age: None,
        }
    }

    /// Also forgets ids whose first send is older than `max_age`.
    #[must_use]
    pub fn max_age(self, max_age: Duration) -> Self {
        Self {
            max_age: Some(max_age),
            ..self
        }
    }

    /// How many ids are remembered at most.
    pub fn max_ids(&self) -> usize {
        self.max_ids
    }

    /// How long an id is remembered at most, if bounded by age.
    pub fn age(&self) -> Option<Duration> {
        self.max_age
    }
}

/// The remembered ids of one queue.
#[derive(Debug)]
pub(crate) struct Dedup {
    window: DedupWindow,
    offsets: HashMap<Bytes, u64, RandomState>,
    /// Ids in send order with their send time (wall-clock milliseconds).
    order: VecDeque<(Bytes, u64)>,
}

impl Dedup {
    pub(crate) fn new(window: DedupWindow) -> Self {
        Self {
            window,
            offsets: HashMap::with_hasher(RandomState::new()),
            order: VecDeque::new(),
        }
    }

    fn forget_old(&mut self, now_ms: u64) {
        let max_age_ms = self
            .window
            .max_age
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        while let Some((id, sent_at)) = self.order.front() {
            let too_many = self.order.len() > self.window.max_ids;
            let too_old = max_age_ms.is_some_and(|age| now_ms.saturating_sub(*sent_at) > age);
            if !too_many && !too_old {
                break;
            }
            self.offsets.remove(id);
            self.order.pop_front();
        }
    }

    /// The offset of the remembered send of `id`, if any.
    pub(crate) fn lookup(&mut self, id: &[u8], now_ms: u64) -> Option<u64> {
        self.forget_old(now_ms);
        self.offsets.get(id).copied()
    }

    /// Remembers that `id` was stored at `offset`, sent at `sent_at_ms`.
    pub(crate) fn remember(&mut self, id: Bytes, offset: u64, sent_at_ms: u64) {
        if self.offsets.insert(id.clone(), offset).is_none() {
            self.order.push_back((id, sent_at_ms));
        }
        self.forget_old(sent_at_ms);
    }
}
