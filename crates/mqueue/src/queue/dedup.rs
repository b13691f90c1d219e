//! Producer idempotence: message ids remembered over a window of recent sends.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use infra_common::RandomState;

/// Which recent message ids a queue remembers, to turn a repeated send into a no-op.
///
/// A send whose id is remembered is not stored again: it returns the offset of the first
/// send (see [`Sent::duplicate`](super::Sent::duplicate)). An id is forgotten once `max_ids`
/// newer messages (with or without an id) have been stored, or, with `max_age`, once its
/// first send is older than that on the wall clock. A durable queue rebuilds the window on
/// open from the last `max_ids` messages of its log, so the window is the same after a
/// restart and a producer retrying across one is still deduplicated.
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
    /// Remembers the ids of the last `max_ids` messages stored (at least one).
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

    /// How many of the latest messages' ids are remembered.
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
    /// Every stored message in send order: its id if it had one, its offset and its send time
    /// (wall-clock milliseconds).
    order: VecDeque<(Option<Bytes>, u64, u64)>,
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
        while let Some((_, _, sent_at)) = self.order.front() {
            let too_many = self.order.len() > self.window.max_ids;
            let too_old = max_age_ms.is_some_and(|age| now_ms.saturating_sub(*sent_at) > age);
            if !too_many && !too_old {
                break;
            }
            if let Some((Some(id), offset, _)) = self.order.pop_front() {
                self.forget(&id, offset);
            }
        }
    }

    /// Forgets `id` only if its remembered send is the one at `offset`: a window rebuilt on
    /// open can hold an id twice (stored again after its first send aged out), and the older
    /// entry leaving must not take the newer one's id with it.
    fn forget(&mut self, id: &Bytes, offset: u64) {
        if self.offsets.get(id) == Some(&offset) {
            self.offsets.remove(id);
        }
    }

    /// The offset of the remembered send of `id`, if any.
    pub(crate) fn lookup(&mut self, id: &[u8], now_ms: u64) -> Option<u64> {
        self.forget_old(now_ms);
        self.offsets.get(id).copied()
    }

    /// Remembers that a message (with `id`, if any) was stored at `offset`, sent at
    /// `sent_at_ms`. A stored message's id is in the window already only while a durable
    /// queue rebuilds it, when the id's earlier send had aged out before this one.
    pub(crate) fn remember(&mut self, id: Option<Bytes>, offset: u64, sent_at_ms: u64) {
        if let Some(id) = &id {
            self.offsets.insert(id.clone(), offset);
        }
        self.order.push_back((id, offset, sent_at_ms));
        self.forget_old(sent_at_ms);
    }
}
