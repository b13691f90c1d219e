//! One shard: the entries, their index, and the replacement policy (adaptive W-TinyLFU).
//!
//! The policy follows W-TinyLFU (Einziger, Eytan, Friedman and Manes, "Adaptive Software Cache
//! Management", Middleware 2018), the design Caffeine made popular:
//!
//! - New entries enter a small **window** queue (LRU), which lets a burst of new keys build up
//!   frequency before it has to compete.
//! - An entry leaving the window is a *candidate* for the **main** space, a segmented LRU with a
//!   **probation** and a **protected** queue (80 % of the main space). The candidate duels the
//!   probation queue's least recently used entry, the *victim*: the one with the higher
//!   estimated frequency ([`FrequencySketch`]) stays. Ties evict the candidate, which is what
//!   makes one-pass scans unable to flush the cache, unless the candidate is a key the main
//!   space let go that is back while the shard remembers letting it go ([`Evicted`]: the last
//!   evictions, a quarter to a half of the entry count): it had earned its place once, and
//!   between two equally popular keys the one asked for again is the better bet, as
//!   quick_cache and CLOCK-Pro admit a key back from their ghost lists. Only a tie: a
//!   recalled key with the lower count still loses, so keys looping over more than the
//!   cache's size do not push each other out as under LRU (admitting every recalled key cost
//!   about 0.02 of hit ratio on P3 at 32,768 entries). A key the duel rejected that comes
//!   back soon may enter anyway, while doing so pays ([`Readmission`]): that is how a new
//!   working set gets past main entries whose counts are high but stale.
//! - A hit in probation promotes the entry to protected; protected overflow is demoted back to
//!   probation's most recently used end.
//! - A hit in protected does not move the entry: it sets the entry's *referenced* mark, so the
//!   common hit touches the entry's own node only, not its neighbours' and the head's as a
//!   list move does. Protected's order is thus second chance (CLOCK), an approximation of LRU:
//!   wherever protected's tail is taken (demoted on overflow, or evicted or dueled while
//!   probation is empty), a marked tail is moved back to the head with its mark cleared, and
//!   the first unmarked one goes. An expired tail, marked or not, gets no second chance: it
//!   is reclaimed as an expiration where it is met, so a dead entry never makes a live one
//!   leave in its place. The window stays exact LRU (a hit there moves the entry), and a hit
//!   in probation leaves it anyway.
//! - **Ghosts adapt the window's share**, as ARC (Megiddo and Modha, FAST 2003) adapts its
//!   recency list: the shard remembers the hashes of keys recently let go by the window (the
//!   duel rejected them) and by the main space. A miss on a key the window let go grows the
//!   window; a miss on one the main space let go shrinks it; each step is one mean entry
//!   weight times the ratio of the other ghost's size to this one's. A recency-heavy workload
//!   grows the window towards plain LRU; a frequency-heavy one shrinks it towards pure
//!   TinyLFU. (Caffeine's hill climbing on sampled hit ratios was tried first: on the Zipf
//!   rows of the hit-ratio table its noisy samples cost more than a fixed window.)
//!
//! All sizes are weights (a user's weigher, bytes in an HTTP cache), so the queues hold
//! weighted budgets rather than counts. The queues are intrusive doubly linked lists through
//! slot indices, and the index is an open-addressing table of slot numbers, so an entry costs
//! its node plus four bytes of table.

use hashbrown::HashTable;

use super::evicted::Evicted;
use super::ghost::Ghost;
use super::readmission::Readmission;
use super::sketch::FrequencySketch;

/// An index that is no slot: the end of a list.
const NIL: u32 = u32::MAX;
/// The largest number of slots a shard uses (one index is `NIL`).
const MAX_SLOTS: usize = NIL as usize;
/// An expiry that never comes.
pub(crate) const NEVER: u64 = u64::MAX;
/// The window's initial share of the shard: 1 %.
const INITIAL_WINDOW_PERCENT: u64 = 1;
/// The protected queue's share of the main space: 80 %.
const PROTECTED_PERCENT: u64 = 80;
/// The ghosts hold the hashes of this fraction (1/32) of the shard's entry count each: enough
/// to see a window or main space that is too small, few enough that old evictions do not steer
/// (measured on the hit-ratio table; one ghost per entry drifted the window too far on Zipf).
const GHOST_DIVISOR: usize = 32;
/// The smallest ghost, for small shards.
const GHOST_MIN: usize = 16;
/// The keys the main space let go are remembered for admission through the last evictions
/// numbering this fraction (1/2) of the shard's entry count (at least half of that: see
/// [`Evicted`]). On the hit-ratio table Zipf 1.2 at 25,000 entries passed quick_cache only
/// with this much memory (1/8 and 1/32 measured 0.0002 lower); a whole entry count measured
/// the same as a half.
const EVICTED_DIVISOR: usize = 2;
/// Expired entries examined per insert by the incremental sweep.
const SWEEP_PER_INSERT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Window,
    Probation,
    Protected,
}

/// Where an entry stands with the admission duel's second chances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readmit {
    /// Nothing to note.
    No,
    /// A key the main space let go, back while the shard remembers it: it wins a tied duel.
    Recalled,
    /// A key the duel rejected, back soon: it may enter the main space even if it loses.
    Returning,
    /// Both: it wins a tie, and may enter even if it loses (winning only ties would leave it
    /// behind stale counts a key never let go gets past).
    RecalledReturning,
    /// In the main space only thanks to readmission, and not hit there yet.
    Readmitted,
}

#[derive(Debug)]
struct Node<K, V> {
    key: K,
    value: V,
    hash: u64,
    /// Monotonic nanoseconds after which the entry is gone, or [`NEVER`].
    expires_at: u64,
    weight: u32,
    readmit: Readmit,
    prev: u32,
    next: u32,
    queue: Queue,
    /// Hit since it was last put at its queue's head. Protected marks a hit here instead of
    /// moving the entry, which would touch its neighbours' nodes; the mark is read when the
    /// entry reaches protected's tail.
    referenced: bool,
}

#[derive(Debug)]
enum Slot<K, V> {
    Occupied(Node<K, V>),
    /// A free slot, linked to the next free one.
    Free(u32),
}

/// A doubly linked queue through slot indices: `head` is the most recently used end.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    weight: u64,
}

impl List {
    const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
        weight: 0,
    };
}

/// What a shard has counted; summed over shards into [`crate::Stats`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardCounters {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) evictions: u64,
    pub(crate) expirations: u64,
    pub(crate) rejections: u64,
}

/// One shard of the cache: entries, index and policy, used under the shard's lock.
#[derive(Debug)]
pub(crate) struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    free: u32,
    len: usize,
    window: List,
    probation: List,
    protected: List,
    max_weight: u64,
    window_max: u64,
    protected_max: u64,
    sketch: FrequencySketch,
    /// Keys the window let go (rejected by the admission duel).
    window_ghost: Ghost,
    /// Keys the main space let go.
    main_ghost: Ghost,
    /// Keys the main space let go, remembered longer than by `main_ghost`, for admission.
    evicted: Evicted,
    readmission: Readmission,
    sweep_cursor: usize,
    pub(crate) counters: ShardCounters,
}

/// How a shard reaches the current time: read only when an entry has an expiry.
pub(crate) trait Now {
    fn now(&self) -> u64;
}

impl<F: Fn() -> u64> Now for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// `percentage` % of `value`, rounded down, without overflow.
fn percent(value: u64, percentage: u64) -> u64 {
    value / 100 * percentage + value % 100 * percentage / 100
}

impl<K, V> Shard<K, V> {
    /// An empty shard holding at most `max_weight`.
    pub(crate) fn new(max_weight: u64) -> Self {
        let window_max = percent(max_weight, INITIAL_WINDOW_PERCENT);
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free: NIL,
            len: 0,
            window: List::EMPTY,
            probation: List::EMPTY,
            protected: List::EMPTY,
            max_weight,
            window_max,
            protected_max: percent(max_weight - window_max, PROTECTED_PERCENT),
            // Sized for a few entries, then grown with the entry count.
            sketch: FrequencySketch::new(1),
            window_ghost: Ghost::default(),
            main_ghost: Ghost::default(),
            evicted: Evicted::default(),
            readmission: Readmission::default(),
            sweep_cursor: 0,
            counters: ShardCounters::default(),
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The summed weight of the entries.
    pub(crate) fn weight(&self) -> u64 {
        self.window.weight + self.probation.weight + self.protected.weight
    }

    /// The budget.
    pub(crate) fn max_weight(&self) -> u64 {
        self.max_weight
    }

    /// The summed weight of the main space's entries.
    fn main_weight(&self) -> u64 {
        self.probation.weight + self.protected.weight
    }
}

impl<K: Eq, V: Clone> Shard<K, V> {
    fn node(&self, index: u32) -> &Node<K, V> {
        match &self.slots[index as usize] {
            Slot::Occupied(node) => node,
            Slot::Free(_) => unreachable!("a linked or indexed slot is occupied"),
        }
    }

    fn node_mut(&mut self, index: u32) -> &mut Node<K, V> {
        match &mut self.slots[index as usize] {
            Slot::Occupied(node) => node,
            Slot::Free(_) => unreachable!("a linked or indexed slot is occupied"),
        }
    }

    fn find(&self, hash: u64, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&index| match &slots[index as usize] {
                Slot::Occupied(node) => node.key == *key,
                Slot::Free(_) => false,
            })
            .copied()
    }

    fn list_mut(&mut self, queue: Queue) -> &mut List {
        match queue {
            Queue::Window => &mut self.window,
            Queue::Probation => &mut self.probation,
            Queue::Protected => &mut self.protected,
        }
    }

    /// Takes a node out of its queue.
    fn unlink(&mut self, index: u32) {
        let (prev, next, queue, weight) = {
            let node = self.node(index);
            (node.prev, node.next, node.queue, u64::from(node.weight))
        };
        if prev == NIL {
            self.list_mut(queue).head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.list_mut(queue).tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        self.list_mut(queue).weight -= weight;
    }

    /// Puts a node at the most recently used end of `queue`. Its position there now stands for
    /// its latest use, so any earlier hit mark is spent.
    fn push_head(&mut self, index: u32, queue: Queue) {
        let old_head = self.list_mut(queue).head;
        let weight = {
            let node = self.node_mut(index);
            node.prev = NIL;
            node.next = old_head;
            node.queue = queue;
            node.referenced = false;
            u64::from(node.weight)
        };
        if old_head == NIL {
            self.list_mut(queue).tail = index;
        } else {
            self.node_mut(old_head).prev = index;
        }
        let list = self.list_mut(queue);
        list.head = index;
        list.weight += weight;
    }

    fn move_to(&mut self, index: u32, queue: Queue) {
        self.unlink(index);
        self.push_head(index, queue);
    }

    /// Removes an entry from its queue, the index and its slot, returning its value. Every way
    /// out passes here, so a readmitted entry leaving unhit is counted once, however it leaves.
    fn remove_index(&mut self, index: u32) -> V {
        self.unlink(index);
        let (hash, readmit) = {
            let node = self.node(index);
            (node.hash, node.readmit)
        };
        if readmit == Readmit::Readmitted {
            self.readmission.on_readmitted_left_unhit();
        }
        if let Ok(found) = self.table.find_entry(hash, |&other| other == index) {
            found.remove();
        }
        self.len -= 1;
        let slot = std::mem::replace(&mut self.slots[index as usize], Slot::Free(self.free));
        self.free = index;
        match slot {
            Slot::Occupied(node) => node.value,
            Slot::Free(_) => unreachable!("removed slots are occupied"),
        }
    }

    fn is_expired(node: &Node<K, V>, now: &impl Now) -> bool {
        node.expires_at != NEVER && now.now() >= node.expires_at
    }

    /// Looks a key up as a request: counts a hit or a miss and updates the policy. Inlined
    /// into `Cache::get`, the one caller, so a hit makes no call of its own.
    #[inline(always)]
    pub(crate) fn get(&mut self, hash: u64, key: &K, now: &impl Now) -> Option<V> {
        self.sketch.increment(hash);
        let Some(index) = self.find(hash, key) else {
            return self.missed(hash, now);
        };
        // The node is read once for the whole hit: the expiry, readmission's mark, the queue,
        // and the value.
        let Slot::Occupied(node) = &mut self.slots[index as usize] else {
            unreachable!("an indexed slot is occupied");
        };
        if Self::is_expired(node, now) {
            self.remove_index(index);
            self.counters.expirations += 1;
            return self.missed(hash, now);
        }
        self.counters.hits += 1;
        // A hit, not an update, is what shows readmission paid.
        if node.readmit == Readmit::Readmitted {
            node.readmit = Readmit::No;
            self.readmission.on_readmitted_hit();
        }
        let value = node.value.clone();
        // The hot path: protected's hits set a mark (see `on_hit`).
        if node.queue == Queue::Protected {
            node.referenced = true;
        } else {
            self.on_hit(index, now);
        }
        Some(value)
    }

    /// A lookup's miss: counted, and told to readmission and the ghosts.
    fn missed(&mut self, hash: u64, now: &impl Now) -> Option<V> {
        self.counters.misses += 1;
        self.readmission.on_miss(hash);
        self.learn_from_ghosts(hash, now);
        None
    }

    /// Looks a key up without counting it or touching the policy.
    pub(crate) fn peek(&self, hash: u64, key: &K, now: &impl Now) -> Option<V> {
        let node = self.node(self.find(hash, key)?);
        (!Self::is_expired(node, now)).then(|| node.value.clone())
    }

    /// The policy's reaction to a hit or an update.
    fn on_hit(&mut self, index: u32, now: &impl Now) {
        match self.node(index).queue {
            Queue::Window => self.move_to(index, Queue::Window),
            Queue::Probation => {
                self.move_to(index, Queue::Protected);
                self.demote_protected_overflow(now);
            }
            // The hot path: a mark, read later by `protected_victim`, instead of a list move.
            Queue::Protected => self.node_mut(index).referenced = true,
        }
    }

    /// Protected's least recently used entry by the second-chance (CLOCK) rule: a tail hit
    /// since it was last put at the head goes back to the head, its mark cleared, until the
    /// tail is one that was not, or one that has expired: a dead entry is going anyway, and a
    /// second chance would make a live one go in its place (the callers reclaim it). NIL when
    /// protected is empty. Each mark is cleared once, so this costs one move per hit, however
    /// many it makes at once.
    fn protected_victim(&mut self, now: &impl Now) -> u32 {
        loop {
            let tail = self.protected.tail;
            if tail == NIL {
                return NIL;
            }
            let node = self.node(tail);
            // An unmarked tail goes either way, so only a marked one's expiry is read here
            // (the caller reads the other's).
            if !node.referenced || Self::is_expired(node, now) {
                return tail;
            }
            self.move_to(tail, Queue::Protected);
        }
    }

    /// The main space's next entry to go: probation's least recently used, or, with probation
    /// empty, protected's (by [`Self::protected_victim`]). NIL when the main space is empty.
    /// It may have expired: the caller reclaims it as an expiration.
    fn main_victim(&mut self, now: &impl Now) -> u32 {
        match self.probation.tail {
            NIL => self.protected_victim(now),
            tail => tail,
        }
    }

    /// Moves protected's overflow to probation. An expired entry met on the way is reclaimed
    /// rather than moved, and the overflow checked again: its room may be all that was needed.
    fn demote_protected_overflow(&mut self, now: &impl Now) {
        while self.protected.weight > self.protected_max {
            let tail = self.protected_victim(now);
            if tail == NIL {
                break;
            }
            if !self.reclaim_if_expired(tail as usize, now) {
                self.move_to(tail, Queue::Probation);
            }
        }
    }

    /// Inserts or replaces an entry, then evicts until the shard fits its budget. Returns
    /// whether the entry is held once that is done.
    ///
    /// An entry heavier than the whole shard, or expired as it is written, is not stored, and
    /// any older value of its key is removed so a later lookup never returns it. One the
    /// admission duel turns away (or the eviction that follows takes) is stored and evicted
    /// at once: counted as an eviction, and not held.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        weight: u32,
        expires_at: u64,
        now: &impl Now,
    ) -> bool {
        // A weight of zero would let the entry count grow without bound.
        let weight = weight.max(1);
        let mut existing = self.find(hash, &key);
        // An expired entry is absent to every lookup: a write over it stores a new entry (an
        // insert, starting in the window) rather than replacing a present value.
        if let Some(index) = existing
            && Self::is_expired(self.node(index), now)
        {
            self.remove_index(index);
            self.counters.expirations += 1;
            existing = None;
        }
        if expires_at != NEVER && now.now() >= expires_at {
            // Dead on arrival: no lookup could return it, and admitting it could evict live
            // entries. The write still replaces a present value, which goes with it.
            if let Some(index) = existing {
                self.remove_index(index);
                self.counters.updates += 1;
            } else {
                self.counters.inserts += 1;
            }
            self.counters.expirations += 1;
            return false;
        }
        if u64::from(weight) > self.max_weight {
            if let Some(index) = existing {
                self.remove_index(index);
            }
            self.counters.rejections += 1;
            return false;
        }
        let index = if let Some(index) = existing {
            self.set_value(index, value, weight, expires_at);
            self.counters.updates += 1;
            self.on_hit(index, now);
            index
        } else {
            if self.len >= MAX_SLOTS {
                // Four billion entries in one shard: make room by the policy's own order.
                self.evict_one(now);
            }
            // Back without a miss (a write-through): whatever it misses later is not a hit a
            // readmission cost.
            self.readmission.forget_displaced(hash);
            // The returning note is spent by the insert either way.
            let recalled = self.evicted.contains(hash);
            let returning = self.readmission.take_returning(hash);
            let readmit = match (recalled, returning) {
                (true, true) => Readmit::RecalledReturning,
                (true, false) => Readmit::Recalled,
                (false, true) => Readmit::Returning,
                (false, false) => Readmit::No,
            };
            let node = Node {
                key,
                value,
                hash,
                expires_at,
                weight,
                readmit,
                prev: NIL,
                next: NIL,
                queue: Queue::Window,
                referenced: false,
            };
            let index = if self.free == NIL {
                let index = self.slots.len() as u32;
                self.slots.push(Slot::Occupied(node));
                index
            } else {
                let index = self.free;
                self.free = match std::mem::replace(
                    &mut self.slots[index as usize],
                    Slot::Occupied(node),
                ) {
                    Slot::Free(next) => next,
                    Slot::Occupied(_) => unreachable!("the free list holds free slots"),
                };
                index
            };
            let slots = &self.slots;
            self.table
                .insert_unique(hash, index, |&other| match &slots[other as usize] {
                    Slot::Occupied(node) => node.hash,
                    Slot::Free(_) => 0,
                });
            self.push_head(index, Queue::Window);
            self.len += 1;
            self.counters.inserts += 1;
            self.sketch.ensure_capacity(self.len);
            index
        };
        self.sweep_expired(now);
        self.evict(now);
        // Nothing is stored while making room, so the slot holds the entry unless the policy
        // let it go.
        matches!(self.slots[index as usize], Slot::Occupied(_))
    }

    /// Gives a present entry a new value, weight and expiry, in its place in its queue.
    fn set_value(&mut self, index: u32, value: V, weight: u32, expires_at: u64) {
        let queue = self.node(index).queue;
        let old_weight = {
            let node = self.node_mut(index);
            node.value = value;
            node.expires_at = expires_at;
            std::mem::replace(&mut node.weight, weight)
        };
        let list = self.list_mut(queue);
        list.weight = list.weight - u64::from(old_weight) + u64::from(weight);
    }

    /// Replaces the value of a live entry as the cache's own upkeep rather than a write: not
    /// counted, and not an access the policy sees (the entry keeps its place); a heavier value
    /// then makes room as an insert does. Whether the value was stored: not if the key had no
    /// live entry (an absent or expired one is left as it is), nor if the value is heavier
    /// than the whole shard, which removes the entry, as an insert of that value would.
    #[cfg(any(test, feature = "tokio"))]
    pub(crate) fn replace(
        &mut self,
        hash: u64,
        key: &K,
        value: V,
        weight: u32,
        expires_at: u64,
        now: &impl Now,
    ) -> bool {
        let Some(index) = self.find(hash, key) else {
            return false;
        };
        if Self::is_expired(self.node(index), now) {
            return false;
        }
        // A weight of zero would let the entry count grow without bound.
        let weight = weight.max(1);
        if u64::from(weight) > self.max_weight {
            // Making room for it would empty the shard and then evict it too. Its older value
            // goes all the same: the caller meant it replaced, so it must not come back.
            self.remove_index(index);
            return false;
        }
        self.set_value(index, value, weight, expires_at);
        self.evict(now);
        true
    }

    /// Removes a key, returning its value if it was present and not expired.
    pub(crate) fn remove(&mut self, hash: u64, key: &K, now: &impl Now) -> Option<V> {
        // An invalidated key would miss next even had no readmission displaced it.
        self.readmission.forget_displaced(hash);
        let index = self.find(hash, key)?;
        let expired = Self::is_expired(self.node(index), now);
        let value = self.remove_index(index);
        if expired {
            self.counters.expirations += 1;
        }
        (!expired).then_some(value)
    }

    /// Keeps only the entries for which `keep` returns true (expired ones are dropped too).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool, now: &impl Now) {
        for index in 0..self.slots.len() {
            // Expired entries are reclaimed (and counted) as the sweep does; `keep` sees only
            // live ones.
            self.reclaim_if_expired(index, now);
            let drop = match &self.slots[index] {
                Slot::Occupied(node) => !keep(&node.key, &node.value),
                Slot::Free(_) => false,
            };
            if drop {
                self.remove_index(index as u32);
            }
        }
    }

    /// Examines a few slots round-robin and reclaims expired entries, so entries nobody asks
    /// for again do not hold memory past their expiry for long.
    fn sweep_expired(&mut self, now: &impl Now) {
        for _ in 0..SWEEP_PER_INSERT {
            if self.slots.is_empty() {
                return;
            }
            if self.sweep_cursor >= self.slots.len() {
                self.sweep_cursor = 0;
            }
            let index = self.sweep_cursor;
            self.sweep_cursor += 1;
            self.reclaim_if_expired(index, now);
        }
    }

    /// Reclaims the entry in slot `index`, if there is one and it has expired, counted as an
    /// expiration. Whether it did.
    fn reclaim_if_expired(&mut self, index: usize, now: &impl Now) -> bool {
        if let Slot::Occupied(node) = &self.slots[index]
            && Self::is_expired(node, now)
        {
            // Slot indices stay below MAX_SLOTS, so they fit a u32.
            self.remove_index(index as u32);
            self.counters.expirations += 1;
            return true;
        }
        false
    }

    /// Removes every expired entry.
    pub(crate) fn purge_expired(&mut self, now: &impl Now) {
        for index in 0..self.slots.len() {
            self.reclaim_if_expired(index, now);
        }
    }

    /// Removes one entry by the policy's order: the main space's victim, then the window's
    /// LRU. An eviction if it is live; an expired one is reclaimed as the expiration it is.
    /// False when the shard is empty.
    fn evict_one(&mut self, now: &impl Now) -> bool {
        let index = match self.main_victim(now) {
            NIL => self.window.tail,
            victim => victim,
        };
        if index == NIL {
            return false;
        }
        if !self.reclaim_if_expired(index as usize, now) {
            self.forget(index);
            self.remove_index(index);
            self.counters.evictions += 1;
        }
        true
    }

    /// Moves window overflow into the main space through the admission duel, then evicts
    /// until the shard fits its budget.
    fn evict(&mut self, now: &impl Now) {
        while self.window.weight > self.window_max {
            let candidate = self.window.tail;
            if candidate == NIL {
                break;
            }
            self.unlink(candidate);
            self.admit(candidate, now);
        }
        while self.weight() > self.max_weight && self.evict_one(now) {}
    }

    /// The TinyLFU duel of a candidate leaving the window (already unlinked) against the
    /// victims at probation's LRU end. A returning candidate that loses enters anyway when
    /// readmission allows it, the victim it loses to makes all the room it still needs (a
    /// readmission displaces one entry, so one credit stands for one victim however heavy the
    /// candidate), and that victim's count is below the sketch's ceiling. An expired candidate
    /// or victim takes no part: it is reclaimed as an expiration.
    fn admit(&mut self, candidate: u32, now: &impl Now) {
        // A candidate that expired in the window is a miss to every lookup whatever its count:
        // it leaves as an expiration rather than duel live entries it could evict.
        if Self::is_expired(self.node(candidate), now) {
            // It is in no queue; link it so the removal path stays the one and only way out.
            self.push_head(candidate, Queue::Window);
            self.remove_index(candidate);
            self.counters.expirations += 1;
            return;
        }
        let candidate_weight = u64::from(self.node(candidate).weight);
        let candidate_frequency = self.sketch.frequency(self.node(candidate).hash);
        let readmit_state = std::mem::replace(&mut self.node_mut(candidate).readmit, Readmit::No);
        let returning = matches!(
            readmit_state,
            Readmit::Returning | Readmit::RecalledReturning
        );
        let recalled = matches!(
            readmit_state,
            Readmit::Recalled | Readmit::RecalledReturning
        );
        let mut readmitted = false;
        // The candidate needs room beside the main space and the window's share only: window
        // overflow behind it (a heavy newcomer) leaves through a duel of its own, rather than
        // taking room this candidate's duels freed.
        let room = self.max_weight - self.window.weight.min(self.window_max);
        while self.main_weight() + candidate_weight > room {
            let victim = self.main_victim(now);
            if victim == NIL {
                break;
            }
            // A dead victim is a miss to every lookup whatever its count: it makes room as an
            // expiration, without a duel it could win against a live candidate.
            if self.reclaim_if_expired(victim as usize, now) {
                continue;
            }
            let (victim_frequency, victim_weight) = {
                let node = self.node(victim);
                (self.sketch.frequency(node.hash), u64::from(node.weight))
            };
            // A tie evicts a newcomer, but a recalled key already earned its place in the main
            // space once: between two equally popular keys, the one asked for again stays.
            let wins = candidate_frequency > victim_frequency
                || (recalled && candidate_frequency == victim_frequency);
            // The victim is in the main space, so its weight is part of the main space's.
            let makes_room = self.main_weight() - victim_weight + candidate_weight <= room;
            // A victim at the sketch's ceiling was asked for often since the last halving: its
            // count is not stale, so readmission leaves it to the duel.
            let stale = victim_frequency < FrequencySketch::MAX_FREQUENCY;
            let readmit = !wins && returning && makes_room && stale && self.readmission.allow();
            if wins || readmit {
                readmitted |= readmit;
                if readmit {
                    self.readmission.on_displaced(self.node(victim).hash);
                }
                self.forget(victim);
                self.remove_index(victim);
                self.counters.evictions += 1;
            } else {
                // The candidate loses: it is evicted (it is in no queue; link it so the removal
                // path stays the one and only way out).
                self.push_head(candidate, Queue::Window);
                self.forget(candidate);
                self.remove_index(candidate);
                self.counters.evictions += 1;
                return;
            }
        }
        if readmitted {
            self.node_mut(candidate).readmit = Readmit::Readmitted;
        }
        self.push_head(candidate, Queue::Probation);
    }

    /// Remembers an entry about to be evicted in the ghost of the space it leaves (a window
    /// entry leaves only by losing the duel).
    fn forget(&mut self, index: u32) {
        let node = self.node(index);
        let (hash, queue) = (node.hash, node.queue);
        let capacity = (self.len / GHOST_DIVISOR).max(GHOST_MIN);
        match queue {
            Queue::Window => {
                self.window_ghost.push(hash, capacity);
                self.readmission.on_rejected(hash, self.len);
            }
            Queue::Probation | Queue::Protected => {
                self.main_ghost.push(hash, capacity);
                let remembered = (self.len / EVICTED_DIVISOR).max(GHOST_MIN);
                self.evicted.push(hash, remembered);
            }
        }
    }

    /// ARC's adaptation on a miss: a key the window let go asks for a larger window, a key the
    /// main space let go for a smaller one, by a step weighted by the other ghost's size.
    fn learn_from_ghosts(&mut self, hash: u64, now: &impl Now) {
        let unit = (self.weight() / self.len.max(1) as u64).max(1) as f64;
        let (window_ghosts, main_ghosts) = (
            self.window_ghost.len().max(1) as f64,
            self.main_ghost.len().max(1) as f64,
        );
        if self.window_ghost.take(hash) {
            self.resize_window(unit * (main_ghosts / window_ghosts).max(1.0), now);
        } else if self.main_ghost.take(hash) {
            self.resize_window(-unit * (window_ghosts / main_ghosts).max(1.0), now);
        }
    }

    /// Moves `amount` of budget from the main space to the window (negative: back).
    fn resize_window(&mut self, amount: f64, now: &impl Now) {
        let max = self.max_weight as f64;
        let window = (self.window_max as f64 + amount).clamp(0.0, max);
        // Above 2^53 the budget is not exact as a float and may have rounded up past itself,
        // so the conversion is clamped to it again.
        self.window_max = (window as u64).min(self.max_weight);
        self.protected_max = percent(self.max_weight - self.window_max, PROTECTED_PERCENT);
        self.demote_protected_overflow(now);
        // A smaller window passes its overflow to probation directly: those entries already
        // proved themselves by being kept, and the next insert's eviction trims the main space.
        while self.window.weight > self.window_max {
            let tail = self.window.tail;
            if tail == NIL {
                break;
            }
            self.move_to(tail, Queue::Probation);
        }
        while self.weight() > self.max_weight && self.evict_one(now) {}
    }
}

#[cfg(test)]
mod tests {
    use super::{List, NEVER, NIL, Queue, Shard};

    /// Hashes spread by an odd multiplier, as a real hasher would spread keys.
    fn hash(key: u64) -> u64 {
        key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// Looks a key up and inserts it on a miss, as a cache in front of an origin does.
    fn request(shard: &mut Shard<u64, u64>, key: u64) -> bool {
        let now = || 0;
        let hit = shard.get(hash(key), &key, &now).is_some();
        if !hit {
            shard.insert(hash(key), key, key, 1, NEVER, &now);
        }
        hit
    }

    /// A shard of 100 holding keys 0..100, each asked for ten times: its protected queue full.
    fn warm_shard() -> Shard<u64, u64> {
        let mut shard = Shard::new(100);
        for _ in 0..10 {
            for key in 0..100 {
                request(&mut shard, key);
            }
        }
        assert_eq!(shard.protected.weight, shard.protected_max);
        shard
    }

    /// A shard of 100 entries filled with keys 0 to 99 at time 0, never asked for since.
    fn full_shard() -> Shard<u64, u64> {
        let mut shard = Shard::new(100);
        for key in 0..100 {
            shard.insert(hash(key), key, key, 1, NEVER, &|| 0);
        }
        shard
    }

    fn queue_of(shard: &Shard<u64, u64>, key: u64) -> Option<Queue> {
        let index = shard.find(hash(key), &key)?;
        Some(shard.node(index).queue)
    }

    /// The keys of protected's two least recently placed entries, oldest first.
    fn protected_oldest_two(shard: &Shard<u64, u64>) -> (u64, u64) {
        let oldest = shard.protected.tail;
        let next = shard.node(oldest).prev;
        assert_ne!(next, NIL);
        (shard.node(oldest).key, shard.node(next).key)
    }

    #[test]
    fn a_hit_protected_entry_survives_the_demotion_that_takes_an_unhit_one() {
        let mut shard = warm_shard();
        let now = || 0;
        let (hit, unhit) = protected_oldest_two(&shard);
        assert!(shard.get(hash(hit), &hit, &now).is_some());
        // A probation hit promotes its entry, and protected, full, demotes one to make room.
        let promoted = shard.node(shard.probation.tail).key;
        assert!(shard.get(hash(promoted), &promoted, &now).is_some());
        assert_eq!(queue_of(&shard, promoted), Some(Queue::Protected));
        assert_eq!(queue_of(&shard, hit), Some(Queue::Protected));
        assert_eq!(queue_of(&shard, unhit), Some(Queue::Probation));
        // Its second chance spent the mark: it is now the newest, not marked.
        assert_eq!(shard.protected.head, shard.find(hash(hit), &hit).unwrap());
        assert!(!shard.node(shard.protected.head).referenced);
    }

    #[test]
    fn a_hit_protected_entry_survives_the_eviction_that_takes_an_unhit_one() {
        let mut shard = warm_shard();
        let now = || 0;
        // With probation empty, eviction takes from protected.
        while shard.probation.tail != NIL {
            let key = shard.node(shard.probation.tail).key;
            shard.remove(hash(key), &key, &now);
        }
        let (hit, unhit) = protected_oldest_two(&shard);
        assert!(shard.get(hash(hit), &hit, &now).is_some());
        assert!(shard.evict_one(&now));
        assert_eq!(queue_of(&shard, hit), Some(Queue::Protected));
        assert_eq!(queue_of(&shard, unhit), None);
    }

    /// Walks one queue from its head: links agree both ways, every node says it is in this
    /// queue, only protected's nodes carry a hit mark, and the queue's weight is its nodes'.
    /// Returns the number of nodes.
    fn check_queue(shard: &Shard<u64, u64>, list: List, queue: Queue) -> usize {
        let (mut count, mut weight, mut prev, mut index) = (0, 0, NIL, list.head);
        while index != NIL {
            let node = shard.node(index);
            assert_eq!(node.prev, prev, "{queue:?}: a broken back link");
            assert_eq!(node.queue, queue);
            assert!(!node.referenced || queue == Queue::Protected);
            weight += u64::from(node.weight);
            count += 1;
            (prev, index) = (index, node.next);
        }
        assert_eq!(list.tail, prev, "{queue:?}: the tail is not the last node");
        assert_eq!(
            list.weight, weight,
            "{queue:?}: the weight is not its nodes'"
        );
        count
    }

    fn check_accounting(shard: &Shard<u64, u64>) {
        let count = check_queue(shard, shard.window, Queue::Window)
            + check_queue(shard, shard.probation, Queue::Probation)
            + check_queue(shard, shard.protected, Queue::Protected);
        assert_eq!(count, shard.len());
        assert!(shard.weight() <= shard.max_weight());
    }

    #[test]
    fn queue_weights_stay_exact_through_marks_second_chances_and_resizes() {
        let mut shard = Shard::new(200);
        let mut state = 0x9e37_79b9_u64;
        let now = || 0;
        for step in 0..50_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The smaller of two draws: low keys come often, so protected fills with hit keys.
            let key = (state % 400).min((state >> 32) % 400);
            let weight = (state >> 40) as u32 % 5 + 1;
            match (state >> 50) % 8 {
                0 => {
                    shard.remove(hash(key), &key, &now);
                }
                1 => {
                    shard.insert(hash(key), key, key, weight, NEVER, &now);
                }
                2 if step.is_multiple_of(64) => {
                    // Now and then the ghosts move budget between the window and the main space.
                    let amount = if key.is_multiple_of(2) { 20.0 } else { -20.0 };
                    shard.resize_window(amount, &now);
                }
                _ => {
                    if shard.get(hash(key), &key, &now).is_none() {
                        shard.insert(hash(key), key, key, weight, NEVER, &now);
                    }
                }
            }
            check_accounting(&shard);
        }
    }

    /// A shard of 100 whose main space holds an old working set asked for often (high counts),
    /// and that has just rejected `newcomer`, asked for once.
    fn shard_that_rejected(newcomer: u64) -> Shard<u64, u64> {
        let mut shard = Shard::new(100);
        for _ in 0..10 {
            for key in 0..100 {
                request(&mut shard, key);
            }
        }
        request(&mut shard, newcomer);
        for key in 2_000..2_010 {
            request(&mut shard, key);
        }
        assert!(shard.peek(hash(newcomer), &newcomer, &|| 0).is_none());
        shard
    }

    /// Pushes the window's entries into the main space: fresh keys, each rejected in turn.
    fn flush_window(shard: &mut Shard<u64, u64>) {
        for key in 3_000..3_010 {
            request(shard, key);
        }
    }

    /// Whether a candidate leaving the window enters a full main space when its count ties
    /// the victim's: a key the main space let go (`recalled`), or one never stored before.
    fn a_tied_candidate_enters(recalled: bool) -> bool {
        let now = || 0;
        let mut shard = Shard::new(100);
        for key in 0..100 {
            request(&mut shard, key);
        }
        let candidate = if recalled {
            let victim = shard.main_victim(&now);
            let key = shard.node(victim).key;
            assert!(shard.evict_one(&now));
            key
        } else {
            1_000
        };
        // Every key, the candidate too, counted up to two without a request: no entry moves.
        for key in (0..100).chain([candidate]) {
            while shard.sketch.frequency(hash(key)) < 2 {
                shard.sketch.increment(hash(key));
            }
        }
        // Stored without a miss, so the ghosts leave the window's share alone.
        shard.insert(hash(candidate), candidate, candidate, 1, NEVER, &now);
        assert_eq!(queue_of(&shard, candidate), Some(Queue::Window));
        let victim = shard.main_victim(&now);
        let victim = shard.node(victim).key;
        assert_eq!(
            shard.sketch.frequency(hash(victim)),
            shard.sketch.frequency(hash(candidate)),
            "the duel is a tie"
        );
        // A newcomer pushes the candidate out of the window, into the duel.
        shard.insert(hash(2_000), 2_000, 2_000, 1, NEVER, &now);
        match queue_of(&shard, candidate) {
            Some(queue) => {
                assert_eq!(queue, Queue::Probation);
                assert_eq!(queue_of(&shard, victim), None);
                true
            }
            None => false,
        }
    }

    #[test]
    fn a_replaced_value_is_not_counted_and_keeps_its_place() {
        let mut shard = warm_shard();
        let now = || 0;
        let key = shard.node(shard.probation.tail).key;
        let before = shard.counters;
        assert!(shard.replace(hash(key), &key, 7, 1, NEVER, &now));
        assert_eq!(shard.peek(hash(key), &key, &now), Some(7));
        let after = shard.counters;
        assert_eq!(
            (after.inserts, after.updates, after.hits, after.misses),
            (before.inserts, before.updates, before.hits, before.misses)
        );
        // Not an access: an update would have promoted it to protected.
        assert_eq!(shard.node(shard.probation.tail).key, key);
        shard.insert(hash(key), key, 8, 1, NEVER, &now);
        assert_eq!(queue_of(&shard, key), Some(Queue::Protected));

        // Absent or expired: nothing is stored.
        assert!(!shard.replace(hash(5_000), &5_000, 1, 1, NEVER, &now));
        assert_eq!(shard.peek(hash(5_000), &5_000, &now), None);
        let mut expiring = Shard::new(10);
        expiring.insert(hash(1), 1, 1, 1, 5, &now);
        assert!(!expiring.replace(hash(1), &1, 2, 1, NEVER, &|| 5));
        assert_eq!(expiring.peek(hash(1), &1, &|| 0), Some(1));
    }

    #[test]
    fn a_heavier_replaced_value_makes_room_by_eviction() {
        let mut shard = warm_shard();
        let now = || 0;
        let (weight, evictions) = (shard.weight(), shard.counters.evictions);
        // A protected entry, so the victims are other, unit-weight entries.
        let key = shard.node(shard.protected.head).key;
        // Two units more than the key's one, past the budget of 100 by `weight + 2 - 100`.
        assert!(shard.replace(hash(key), &key, key, 3, NEVER, &now));
        assert_eq!(shard.weight(), 100);
        assert_eq!(shard.counters.evictions - evictions, weight + 2 - 100);
        assert_eq!(shard.peek(hash(key), &key, &now), Some(key));
    }

    /// A value heavier than the whole shard cannot be stored, so its replacement must not
    /// flush the shard trying: it is refused, as an insert of it would be, and the key's older
    /// value goes with it (the caller meant it replaced, so it must not come back).
    #[test]
    fn a_replaced_value_heavier_than_the_shard_is_refused_and_evicts_nothing() {
        let mut shard = warm_shard();
        let now = || 0;
        let (len, before) = (shard.len(), shard.counters);
        let key = shard.node(shard.protected.head).key;
        let too_heavy = u32::try_from(shard.max_weight()).unwrap() + 1;
        let replaced = shard.replace(hash(key), &key, key, too_heavy, NEVER, &now);
        let after = shard.counters;
        assert_eq!(
            (after.evictions - before.evictions, shard.len()),
            (0, len - 1),
            "the other entries are kept"
        );
        assert!(!replaced);
        assert_eq!(shard.peek(hash(key), &key, &now), None);
        check_accounting(&shard);
    }

    #[test]
    fn a_key_the_main_space_let_go_wins_a_tie_a_newcomer_loses() {
        assert!(a_tied_candidate_enters(true));
        assert!(!a_tied_candidate_enters(false));
    }

    #[test]
    fn a_rejected_key_that_returns_gets_past_stale_counts() {
        let newcomer = 1_000;
        let mut shard = shard_that_rejected(newcomer);
        // It comes back while the shard still remembers rejecting it: this time it stays, even
        // after fresh keys have pushed it out of the window and lost their own duels.
        request(&mut shard, newcomer);
        flush_window(&mut shard);
        assert!(request(&mut shard, newcomer));
        assert!(!request(&mut shard, 3_000));
    }

    #[test]
    fn a_rejected_key_the_main_space_let_go_before_gets_past_stale_counts_too() {
        let newcomer = 1_000;
        let mut shard = Shard::new(100);
        let now = || 0;
        // Stored before the shard fills, then let go by the main space for keys asked for more.
        request(&mut shard, newcomer);
        for _ in 0..10 {
            for key in 0..100 {
                request(&mut shard, key);
            }
        }
        assert!(shard.peek(hash(newcomer), &newcomer, &now).is_none());
        assert!(shard.evicted.contains(hash(newcomer)));
        // Back, it loses its duel; back again soon, it stays as any rejected key does.
        request(&mut shard, newcomer);
        for key in 2_000..2_010 {
            request(&mut shard, key);
        }
        assert!(shard.peek(hash(newcomer), &newcomer, &now).is_none());
        request(&mut shard, newcomer);
        flush_window(&mut shard);
        assert!(request(&mut shard, newcomer));
    }

    #[test]
    fn a_returning_key_keeps_its_chance_when_other_requests_come_between() {
        let newcomer = 1_000;
        let mut shard = shard_that_rejected(newcomer);
        let now = || 0;
        // Two lookups miss before either fetch completes, as concurrent requests do; the other
        // key's value arrives first.
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_none());
        assert!(shard.get(hash(4_000), &4_000, &now).is_none());
        shard.insert(hash(4_000), 4_000, 4_000, 1, NEVER, &now);
        shard.insert(hash(newcomer), newcomer, newcomer, 1, NEVER, &now);
        flush_window(&mut shard);
        assert!(request(&mut shard, newcomer));
    }

    #[test]
    fn a_heavy_key_does_not_enter_on_room_another_candidate_made() {
        let mut shard = Shard::new(100);
        for _ in 0..10 {
            for key in 0..100 {
                request(&mut shard, key);
            }
        }
        let now = || 0;
        // Asked for once, weighing half the shard, behind a popular key at the window's tail:
        // that key's duels must make room for itself only, and the heavy key must win its own.
        let heavy = 1_000;
        assert!(shard.get(hash(heavy), &heavy, &now).is_none());
        shard.insert(hash(heavy), heavy, heavy, 50, NEVER, &now);
        assert!(shard.peek(hash(heavy), &heavy, &now).is_none());
        let survivors = (0..100)
            .filter(|key| shard.peek(hash(*key), key, &now).is_some())
            .count();
        assert!(
            survivors >= 98,
            "only {survivors} of 100 hot keys survived one heavy key asked for once"
        );
    }

    #[test]
    fn a_heavy_returning_key_cannot_displace_more_than_one_victim() {
        let mut shard = Shard::new(100);
        for _ in 0..10 {
            for key in 0..100 {
                request(&mut shard, key);
            }
        }
        // A fresh key in the window, so the next window leaver is not a hot one.
        request(&mut shard, 500);
        let now = || 0;
        let heavy = 1_000;
        // Asked for twice: rejected, then returning, weighing half the shard.
        for _ in 0..2 {
            assert!(shard.get(hash(heavy), &heavy, &now).is_none());
            shard.insert(hash(heavy), heavy, heavy, 50, NEVER, &now);
        }
        let survivors = (0..100)
            .filter(|key| shard.peek(hash(*key), key, &now).is_some())
            .count();
        assert!(
            survivors >= 98,
            "only {survivors} of 100 hot keys survived one heavy returning key"
        );
    }

    /// The hit ratio of `hot` warm keys (asked for three times each, then at random) in a
    /// shard of 10,000 while `scans_per_hot` scan requests come with each hot one: scan keys
    /// asked for twice each, 1,000 scan requests apart, so that each returns while the shard
    /// still remembers rejecting it.
    fn hot_hit_ratio_under_scan(hot: u64, scans_per_hot: u64) -> f64 {
        let mut shard = Shard::new(10_000);
        for _ in 0..3 {
            for key in 0..hot {
                request(&mut shard, key);
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut scan = 0u64;
        let (mut hits, rounds) = (0u64, 200_000u64);
        for _ in 0..rounds {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            hits += u64::from(request(&mut shard, state % hot));
            for _ in 0..scans_per_hot {
                let (block, place) = (scan / 2_000, scan % 2_000);
                request(&mut shard, 1_000_000 + block * 1_000 + place % 1_000);
                scan += 1;
            }
        }
        hits as f64 / rounds as f64
    }

    #[test]
    fn a_scan_of_returning_keys_costs_a_warm_hot_set_few_hits() {
        // Measured: 0.939 when a displaced entry asked for again did not slow readmission,
        // 0.997 with readmission switched off, 0.992 now.
        let ratio = hot_hit_ratio_under_scan(9_000, 1);
        assert!(ratio > 0.985, "the hot set's hit ratio fell to {ratio:.4}");
    }

    /// `shard_that_rejected(newcomer)` with `newcomer` back, expiring at `expires_at`, and
    /// readmitted into the main space.
    fn shard_that_readmitted(newcomer: u64, expires_at: u64) -> Shard<u64, u64> {
        let mut shard = shard_that_rejected(newcomer);
        let now = || 0;
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_none());
        shard.insert(hash(newcomer), newcomer, newcomer, 1, expires_at, &now);
        flush_window(&mut shard);
        assert!(shard.peek(hash(newcomer), &newcomer, &now).is_some());
        assert_eq!(shard.readmission.credit(), 0);
        shard
    }

    #[test]
    fn a_readmitted_entry_that_expires_unhit_costs_credit() {
        let newcomer = 1_000;
        let mut shard = shard_that_readmitted(newcomer, 10);
        let later = || 20;
        shard.purge_expired(&later);
        assert!(shard.peek(hash(newcomer), &newcomer, &later).is_none());
        assert_eq!(shard.readmission.credit(), -1);
    }

    #[test]
    fn a_readmitted_entry_removed_unhit_costs_credit() {
        let newcomer = 1_000;
        let mut shard = shard_that_readmitted(newcomer, NEVER);
        let now = || 0;
        assert_eq!(
            shard.remove(hash(newcomer), &newcomer, &now),
            Some(newcomer)
        );
        assert_eq!(shard.readmission.credit(), -1);
    }

    /// `shard_that_readmitted(1_000, NEVER)` and the main entry the readmission displaced.
    fn shard_that_displaced() -> (Shard<u64, u64>, u64) {
        let newcomer = 1_000;
        let now = || 0;
        let mut shard = shard_that_rejected(newcomer);
        let present = |shard: &Shard<u64, u64>| -> Vec<u64> {
            (0..100)
                .filter(|key| shard.peek(hash(*key), key, &now).is_some())
                .collect()
        };
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_none());
        shard.insert(hash(newcomer), newcomer, newcomer, 1, NEVER, &now);
        // The readmission comes as fresh keys push the newcomer out of the window.
        let before = present(&shard);
        flush_window(&mut shard);
        assert!(shard.peek(hash(newcomer), &newcomer, &now).is_some());
        let after = present(&shard);
        let displaced: Vec<u64> = before.into_iter().filter(|k| !after.contains(k)).collect();
        assert_eq!(
            displaced.len(),
            1,
            "one readmission displaces one entry: {displaced:?}"
        );
        assert_eq!(shard.readmission.credit(), 0);
        (shard, displaced[0])
    }

    #[test]
    fn a_displaced_key_asked_for_again_costs_credit_once() {
        let (mut shard, displaced) = shard_that_displaced();
        let now = || 0;
        assert!(shard.get(hash(displaced), &displaced, &now).is_none());
        assert_eq!(shard.readmission.credit(), -1);
        assert!(shard.get(hash(displaced), &displaced, &now).is_none());
        assert_eq!(shard.readmission.credit(), -1);
    }

    #[test]
    fn a_displaced_key_stored_again_without_a_miss_is_no_longer_a_cost() {
        let (mut shard, displaced) = shard_that_displaced();
        // Stored again without a lookup (a write-through), then gone by its expiry: the miss
        // that follows is the expiry's doing, not the readmission's.
        shard.insert(hash(displaced), displaced, displaced, 1, 10, &|| 0);
        assert!(shard.peek(hash(displaced), &displaced, &|| 0).is_some());
        assert!(shard.get(hash(displaced), &displaced, &|| 20).is_none());
        assert_eq!(shard.readmission.credit(), 0);
    }

    #[test]
    fn a_displaced_key_removed_is_no_longer_a_cost() {
        let (mut shard, displaced) = shard_that_displaced();
        let now = || 0;
        // Invalidated: had it stayed, the removal would have taken it and the lookup missed.
        assert_eq!(shard.remove(hash(displaced), &displaced, &now), None);
        assert!(shard.get(hash(displaced), &displaced, &now).is_none());
        assert_eq!(shard.readmission.credit(), 0);
    }

    #[test]
    fn an_expired_entry_in_a_readmissions_way_is_no_cost() {
        let newcomer = 1_000;
        let mut shard = shard_that_rejected(newcomer);
        let (now, later) = (|| 0, || 20);
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_none());
        shard.insert(hash(newcomer), newcomer, newcomer, 1, NEVER, &now);
        // The entry the readmission would displace, probation's oldest, expires before it
        // does: it would miss next anyway, so it is reclaimed rather than displaced.
        let victim = shard.probation.tail;
        shard.node_mut(victim).expires_at = 10;
        let victim = shard.node(victim).key;
        for key in 3_000..3_010 {
            assert!(shard.get(hash(key), &key, &later).is_none());
            shard.insert(hash(key), key, key, 1, NEVER, &later);
        }
        assert!(shard.peek(hash(newcomer), &newcomer, &later).is_some());
        assert_eq!(shard.counters.expirations, 1, "reclaimed as expired");
        assert!(shard.get(hash(victim), &victim, &later).is_none());
        assert_eq!(shard.readmission.credit(), 0);
    }

    #[test]
    fn an_update_is_not_a_hit_that_earns_credit() {
        let newcomer = 1_000;
        let mut shard = shard_that_readmitted(newcomer, NEVER);
        let now = || 0;
        for value in 0..3 {
            shard.insert(hash(newcomer), newcomer, value, 1, NEVER, &now);
        }
        assert_eq!(shard.readmission.credit(), 0);
        // A lookup is the hit that pays, once.
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_some());
        assert!(shard.get(hash(newcomer), &newcomer, &now).is_some());
        assert_eq!(shard.readmission.credit(), 1);
    }

    /// A full shard whose probation's oldest entry has expired but was asked for as often as
    /// every other: the window's next leaver must take the dead entry's room, not lose a duel
    /// to it (a dead entry is a miss to every lookup, so keeping it over a live one only
    /// loses hits).
    #[test]
    fn an_expired_victim_is_reclaimed_and_never_beats_a_live_candidate() {
        let mut shard = full_shard();
        let later = || 20;
        let victim = shard.probation.tail;
        shard.node_mut(victim).expires_at = 10;
        let victim_key = shard.node(victim).key;
        // Every key equally popular: a live victim would win this duel (a tie evicts the
        // newcomer).
        for key in (0..100).chain([1_000]) {
            while shard.sketch.frequency(hash(key)) < 5 {
                shard.sketch.increment(hash(key));
            }
        }
        // The incremental sweep looks elsewhere, so only the duel meets the expired entry.
        shard.sweep_cursor = victim as usize + 1;
        let candidate = shard.node(shard.window.tail).key;
        shard.insert(hash(1_000), 1_000, 1_000, 1, NEVER, &later);
        assert_eq!(queue_of(&shard, candidate), Some(Queue::Probation));
        assert_eq!(queue_of(&shard, victim_key), None, "the dead entry is kept");
        assert_eq!(
            (shard.counters.evictions, shard.counters.expirations),
            (0, 1),
            "reclaimed as expired, and no live entry evicted"
        );
        check_accounting(&shard);
    }

    /// A full shard whose window's leaver has expired there after being asked for often: it
    /// must not win the duel and evict a live entry of the main space for a dead one.
    #[test]
    fn an_expired_candidate_is_reclaimed_and_never_evicts_a_live_victim() {
        let mut shard = full_shard();
        let later = || 20;
        let candidate = shard.window.tail;
        shard.node_mut(candidate).expires_at = 10;
        let candidate_key = shard.node(candidate).key;
        // The candidate far more popular than any entry of the main space: alive, it would
        // win.
        while shard.sketch.frequency(hash(candidate_key)) < 10 {
            shard.sketch.increment(hash(candidate_key));
        }
        let victim_key = shard.node(shard.probation.tail).key;
        // The incremental sweep looks elsewhere, so only the duel meets the expired entry.
        shard.sweep_cursor = candidate as usize + 1;
        shard.insert(hash(1_000), 1_000, 1_000, 1, NEVER, &later);
        assert_eq!(queue_of(&shard, victim_key), Some(Queue::Probation));
        assert_eq!(
            queue_of(&shard, candidate_key),
            None,
            "the dead entry is kept"
        );
        assert_eq!(
            (shard.counters.evictions, shard.counters.expirations),
            (0, 1),
            "reclaimed as expired, and no live entry evicted"
        );
        check_accounting(&shard);
    }

    /// `warm_shard()` with probation emptied, if `empty_probation`, and protected's oldest
    /// entry written again at time 0 to expire at 10: the update marks it as a hit would.
    /// Returns the shard, that entry's key and the key of the live, unmarked entry next to it.
    fn shard_with_a_marked_expiring_protected_tail(
        empty_probation: bool,
    ) -> (Shard<u64, u64>, u64, u64) {
        let mut shard = warm_shard();
        let now = || 0;
        if empty_probation {
            while shard.probation.tail != NIL {
                let key = shard.node(shard.probation.tail).key;
                shard.remove(hash(key), &key, &now);
            }
        }
        let (dead, live) = protected_oldest_two(&shard);
        shard.insert(hash(dead), dead, dead, 1, 10, &now);
        let (tail, next) = (shard.protected.tail, shard.node(shard.protected.tail).prev);
        assert_eq!(shard.node(tail).key, dead);
        assert!(shard.node(tail).referenced && !shard.node(next).referenced);
        (shard, dead, live)
    }

    /// Writes protected's newest entry again, heavier, so that the shard holds `over` units
    /// past its budget less one (1: full to the budget; 2: one unit over).
    fn weigh_down_protected_head(shard: &mut Shard<u64, u64>, over: u64, now: &impl super::Now) {
        let heavier = shard.node(shard.protected.head).key;
        let weight = shard.max_weight() - shard.weight() + over;
        assert!(shard.replace(hash(heavier), &heavier, heavier, weight as u32, NEVER, now));
    }

    /// The dead protected entry left, the live one next to it is still protected, and the one
    /// expiration is all that was taken: no eviction since `evictions` were counted.
    fn assert_only_the_dead_entry_left(
        shard: &Shard<u64, u64>,
        (dead, live): (u64, u64),
        evictions: u64,
    ) {
        assert_eq!(
            queue_of(shard, live),
            Some(Queue::Protected),
            "a live entry left protected in the dead one's place"
        );
        assert_eq!(queue_of(shard, dead), None, "the dead entry is kept");
        assert_eq!(
            (
                shard.counters.evictions - evictions,
                shard.counters.expirations
            ),
            (0, 1),
            "reclaimed as expired, and no live entry evicted"
        );
        check_accounting(shard);
    }

    /// Protected overflows on a promotion while its oldest entry is marked but dead: the dead
    /// entry goes as an expiration, and no live entry is demoted in its place.
    #[test]
    fn an_expired_protected_entry_is_reclaimed_by_demotion_and_never_demotes_a_live_one() {
        let (mut shard, dead, live) = shard_with_a_marked_expiring_protected_tail(false);
        let later = || 20;
        let evictions = shard.counters.evictions;
        let promoted = shard.node(shard.probation.tail).key;
        assert!(shard.get(hash(promoted), &promoted, &later).is_some());
        assert_eq!(queue_of(&shard, promoted), Some(Queue::Protected));
        assert_only_the_dead_entry_left(&shard, (dead, live), evictions);
    }

    /// With probation empty, the budget takes protected's oldest entry, marked but dead: it
    /// goes as an expiration, and no live entry is evicted in its place.
    #[test]
    fn an_expired_protected_entry_is_reclaimed_by_eviction_and_never_evicts_a_live_one() {
        let (mut shard, dead, live) = shard_with_a_marked_expiring_protected_tail(true);
        let later = || 20;
        let evictions = shard.counters.evictions;
        // One unit past the budget: room for one more entry of weight 1.
        weigh_down_protected_head(&mut shard, 2, &later);
        assert_only_the_dead_entry_left(&shard, (dead, live), evictions);
    }

    /// With probation empty and the main space full, the window's leaver duels protected's
    /// oldest entry, marked but dead: that entry goes as an expiration and makes the room, and
    /// no live entry leaves in its place, neither the next one in protected nor the leaver.
    #[test]
    fn an_expired_protected_entry_is_reclaimed_by_the_duel_and_never_costs_a_live_one() {
        let (mut shard, dead, live) = shard_with_a_marked_expiring_protected_tail(true);
        let later = || 20;
        // Fill the shard to its budget without an access, so the next insert needs room.
        weigh_down_protected_head(&mut shard, 1, &later);
        assert_eq!(shard.weight(), shard.max_weight());
        let evictions = shard.counters.evictions;
        // The incremental sweep looks elsewhere, so only the duel meets the expired entry.
        shard.sweep_cursor = shard.find(hash(dead), &dead).unwrap() as usize + 1;
        let leaver = match shard.window.tail {
            NIL => 1_000,
            tail => shard.node(tail).key,
        };
        shard.insert(hash(1_000), 1_000, 1_000, 1, NEVER, &later);
        assert_eq!(queue_of(&shard, leaver), Some(Queue::Probation));
        assert_only_the_dead_entry_left(&shard, (dead, live), evictions);
    }

    /// The budget loop meets an expired entry at probation's end: it leaves as what it is, an
    /// expiration, and only the live entry after it counts as evicted.
    #[test]
    fn an_expired_entry_the_budget_takes_counts_as_an_expiration_not_an_eviction() {
        let mut shard = warm_shard();
        let (now, later) = (|| 0, || 20);
        // Timed without an access, so it stays probation's oldest.
        let dead = shard.node(shard.probation.tail).key;
        assert!(shard.replace(hash(dead), &dead, dead, 1, 10, &now));
        let evictions = shard.counters.evictions;
        // Two units past the budget: two entries of weight 1 must go.
        let heavier = shard.node(shard.protected.head).key;
        let weight = shard.max_weight() - shard.weight() + 3;
        assert!(shard.replace(
            hash(heavier),
            &heavier,
            heavier,
            weight as u32,
            NEVER,
            &later
        ));
        assert_eq!(queue_of(&shard, dead), None);
        assert_eq!(
            (
                shard.counters.evictions - evictions,
                shard.counters.expirations
            ),
            (1, 1),
            "one live entry evicted, one dead one expired"
        );
        check_accounting(&shard);
    }

    /// Budgets above 2^53 are not exact as floating point, and `u64::MAX - 1` rounds up to
    /// 2^64: the window's share, however far the ghosts grow it, stays within the budget.
    #[test]
    fn a_window_grown_to_the_whole_of_a_huge_budget_stays_within_it() {
        let mut shard: Shard<u64, u64> = Shard::new(u64::MAX - 1);
        shard.resize_window(f64::MAX, &|| 0);
        assert!(shard.window_max <= shard.max_weight);
        assert!(shard.protected_max <= shard.max_weight - shard.window_max);
    }
}
