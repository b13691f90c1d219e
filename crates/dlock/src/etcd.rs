//! Mutexes, read-write locks and semaphores shared by many processes through an etcd cluster:
//! FIFO by arrival, with the lock key's create revision as the fencing token.
//!
//! # The recipe
//!
//! It is the queue of etcd's own `concurrency` package, written here from its description:
//!
//! - **Queue.** Each request gets an etcd lease and creates one key,
//!   `{prefix}/{name}/{lease id in hex}`, attached to that lease, in a transaction that creates
//!   it only if it is absent and, in the same round trip, reads every key of the name. Its
//!   value says what it asks for (`exclusive`, `shared` or `permits=N`) and the lease's TTL.
//!   The keys of a name, ordered by **create revision**, are the queue: first come, first
//!   served. A name's `/` and `%` are escaped, so no name's keys fall under another's prefix.
//!   A key in the name's range that is not `{prefix}/{name}/` followed by 16 hex digits, or
//!   whose value is not a lock request, is not part of the queue and is ignored: so a garbled
//!   key cannot stop the name's requests, and the keys of a lock under a longer prefix (prefix
//!   `dlock/a`, whose keys lie in the range of name `a` under prefix `dlock`) never join its
//!   queue.
//! - **Holders.** A mutex, or the writer of a read-write lock, holds the lock when its key is
//!   the first; a reader when no writer's key is ahead of it; a permit of a semaphore of `N`
//!   when fewer than `N` keys are ahead of it. A `try_acquire` joins the queue like the others,
//!   so it never overtakes a waiter, and leaves again (revoking its lease) if it does not hold.
//! - **Waiting** watches, from the revision just read, the one key whose deletion may let the
//!   waiter in: a mutex or writer the key just ahead of it, a reader the last writer ahead of
//!   it, so a release wakes one waiter rather than the herd. A semaphore's waiter watches the
//!   name's deletions, any of which may free a permit. On any event it reads the queue again.
//!   While it waits, it renews its lease every third of the TTL, so it keeps its place.
//! - **Hand-over: the lease is checked again** (etcd issue 11456). A waiter whose lease ran
//!   out while it waited (it was paused, or its renewals did not get through) lost its key
//!   with the lease, and must not be told that it holds the lock. So a waiter that finds
//!   itself at the front first renews its lease once: etcd does not renew a lease that has
//!   expired, and then the waiter joins the queue again at the back under a new lease
//!   instead of returning. The renewal also starts the holder's lease at the hand-over, not
//!   when it began to wait. A request that holds the lock right away skips it: its lease was
//!   granted in the same call.
//! - **Extend** finds the grant's key by its create revision and renews its lease once, or, for
//!   a lease longer than the key's TTL, moves the key to a new lease in a transaction that
//!   compares the create revision; **release** finds the key and revokes its lease, which
//!   deletes the key in the same step. A key that is gone is [`Error::LeaseExpired`] and
//!   nothing else is touched. Each costs two round trips, `is_held` one.
//! - **Kinds.** A request whose kind does not agree with a key ahead of it (a semaphore and a
//!   mutex or read-write lock on one name, or semaphores of different sizes) leaves the queue
//!   and is [`Error::KindMismatch`].
//!
//! An uncontended acquire costs two round trips (lease grant, transaction) and a release two.
//!
//! # Fencing tokens
//!
//! The token is the create revision of the grant's key. etcd's revision is one counter for
//! the whole cluster, raised by every write and never lowered: it is part of the replicated
//! log, so it survives restarts of members and changes of leader, and a write acknowledged by
//! the cluster is never undone. A key is created by a later write than every key created
//! before it, so its revision is larger. For one name, a mutex or writer holds only when every
//! key ahead of it is gone: when a mutex or writer grant begins, every grant with a smaller
//! token (reader, writer or mutex) has ended, and every grant that begins after it has a
//! larger token. Readers and permits do not follow one another in token order: two readers
//! let in by the same writer's release, or two permits freed by one release, begin in
//! whichever order their clients notice. A [`Fence`](crate::Fence) therefore refuses a
//! writer that stalled past its lease once a later writer wrote or a later reader was
//! checked, and a reader that stalled past its lease once a later writer wrote. Tokens go back only if the cluster
//! loses its data (a new cluster, or one restored from an older backup): then raise the fences'
//! marks by hand, or lock under a new prefix.
//!
//! # Leases and their TTL
//!
//! etcd counts a lease's TTL in whole seconds on the leader's clock, from when it handles the
//! grant or renewal. The client counts the grant's [`Grant::lease`], the lease
//! asked for, on its [`Clock`] from the moment it **sent** the request, which is never later.
//! The TTL asked for is the lease plus a clock-drift allowance
//! (`lease × drift_permille / 1000 + drift_fixed`, by default 1 % and 2 ms), rounded up to
//! whole seconds: a 500 ms lease asks for 1 s, a 10 s lease for 11 s. The server raises a TTL
//! below its own minimum (2 s with etcd's default election timeout). So the server keeps a
//! key at least as long as the client counts its grant, and usually longer: a holder that
//! stops renewing keeps others out until the TTL has passed, not only its lease. The allowance
//! covers clock rates, not a holder that pauses after checking: hence the fence.
//!
//! # Safe for correctness?
//!
//! For mutexes and read-write locks, with a fence at the resource (writers
//! [`Fence::admit`](crate::Fence::admit), readers [`Fence::check`](crate::Fence::check)),
//! **yes**, as long as the cluster keeps its data: tokens grow (above), so a holder that
//! pauses past its lease, a write delayed in the network, or a leader change that hands the
//! lock on — the later holder's token is larger, and the fence refuses the earlier one.
//! Exclusion itself rests on etcd: a key is the first of its queue in one linearizable view of
//! the cluster. Without a fence it is an **efficiency** lock: exclusion holds only while no
//! holder outlives its lease. A semaphore is an efficiency limit with a fence or without:
//! permits do not exclude each other, so nothing refuses a stalled permit holder's late write.
//!
//! # Blocking calls on a runtime of their own
//!
//! The etcd client is async. An [`EtcdLocks`] owns a single-threaded tokio runtime driven by
//! one background thread; the [`Locks`] methods hand their requests to it and block until the
//! answer, on a condition variable, so they work from any thread, a `spawn_blocking` closure
//! included. Like every blocking backend, they should not be called on an async runtime's
//! own thread, where they would stall that runtime's other tasks for as long as they wait:
//! from async code, call them through `spawn_blocking` (as the `tokio` feature's
//! `AsyncLocks` does). The runtime stops when the `EtcdLocks` is dropped; a request dropped
//! without an answer (a panic inside the client) is [`Error::Backend`], not a caller blocked
//! for ever.
//!
//! # Timeouts and failures
//!
//! Every request has a timeout ([`EtcdOptions::timeout`], default 1 s). A failed or timed-out
//! request is [`Error::Backend`], never a panic; after a timeout its outcome is unknown. A grant
//! the cluster may have made without the caller learning of it runs out with its lease, since
//! nothing renews it; the caller also revokes the lease once, and if that fails too the key
//! keeps the lock until its TTL has passed. A **waiting** acquisition instead rides out failed
//! requests — a leader election, a member killed or paused, a cut connection — retrying every
//! few milliseconds (up to [`EtcdOptions::max_backoff`]) for as long as its lease's TTL; then it
//! gives up with [`Error::Backend`]. `try_acquire` tries once.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions,
};
use infra_common::clock::duration_to_nanos;
use infra_common::sync::{Arc, Condvar, Mutex, thread};
use infra_common::{Clock, SystemClock};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::grant::{Access, FencingToken, Grant, LockName, Wait, check_lease, check_request};
use crate::locks::Locks;
use crate::metered::ServerCalls;

/// Settings of an [`EtcdLocks`].
///
/// ```
/// use infra_dlock::etcd::EtcdOptions;
/// use std::time::Duration;
///
/// let options = EtcdOptions::default()
///     .timeout(Duration::from_millis(500))
///     .prefix("billing/locks");
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    timeout: Duration,
    prefix: String,
    drift_permille: u32,
    drift_fixed: Duration,
    max_backoff: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            prefix: "dlock".to_owned(),
            drift_permille: 10,
            drift_fixed: Duration::from_millis(2),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl EtcdOptions {
    /// How long to wait for connecting and for each answer (default 1 s). A request that
    /// times out is [`Error::Backend`], with its outcome unknown.
    ///
    /// ```
    /// use infra_dlock::etcd::EtcdOptions;
    /// use std::time::Duration;
    ///
    /// let options = EtcdOptions::default().timeout(Duration::from_millis(500));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self {
            timeout: timeout.max(Duration::from_millis(1)),
            ..self
        }
    }

    /// The prefix of every etcd key (default `dlock`): a lock's keys are
    /// `{prefix}/{name}/{lease id}`.
    ///
    /// ```
    /// use infra_dlock::etcd::EtcdOptions;
    ///
    /// let options = EtcdOptions::default().prefix("billing/locks");
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The clock-drift allowance added to each lease before it is rounded up to the TTL asked
    /// of etcd: this many thousandths of the lease (default 10, that is 1 %) plus `fixed`
    /// (default 2 ms).
    ///
    /// ```
    /// use infra_dlock::etcd::EtcdOptions;
    /// use std::time::Duration;
    ///
    /// let options = EtcdOptions::default().drift_allowance(50, Duration::from_millis(10));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn drift_allowance(self, permille: u32, fixed: Duration) -> Self {
        Self {
            drift_permille: permille,
            drift_fixed: fixed,
            ..self
        }
    }

    /// The longest pause between retries of a waiting acquisition whose requests fail
    /// (default 100 ms); the pauses start at 1 ms and double.
    ///
    /// ```
    /// use infra_dlock::etcd::EtcdOptions;
    /// use std::time::Duration;
    ///
    /// let options = EtcdOptions::default().max_backoff(Duration::from_millis(20));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn max_backoff(self, max_backoff: Duration) -> Self {
        Self {
            max_backoff: max_backoff.max(Duration::from_millis(1)),
            ..self
        }
    }

    /// The TTL, in whole seconds, asked of etcd for a lease of `lease`: the lease plus the
    /// drift allowance, rounded up.
    fn ttl_secs(&self, lease: Duration) -> i64 {
        let share = lease.as_nanos() * u128::from(self.drift_permille) / 1000;
        let nanos = lease.as_nanos() + share + self.drift_fixed.as_nanos();
        // `lease` is at most a week, so this is far below `i64::MAX` for any sane allowance.
        i64::try_from(nanos.div_ceil(1_000_000_000))
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// What a key in a lock's queue asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A mutex, or the writer of a read-write lock.
    Exclusive,
    /// A reader of a read-write lock.
    Shared,
    /// A permit of a semaphore of this many.
    Permits(u32),
}

impl Kind {
    fn of(access: Access) -> Self {
        match access {
            Access::Exclusive => Self::Exclusive,
            Access::Shared => Self::Shared,
            Access::Permit { permits } => Self::Permits(permits),
        }
    }

    /// Whether the two may share one name's queue.
    fn agrees_with(self, other: Self) -> bool {
        match (self, other) {
            (Self::Permits(mine), Self::Permits(theirs)) => mine == theirs,
            (Self::Permits(_), _) | (_, Self::Permits(_)) => false,
            _ => true,
        }
    }

    /// The key's value: the kind and the TTL of the key's lease in seconds.
    fn value(self, ttl: i64) -> String {
        match self {
            Self::Exclusive => format!("exclusive ttl={ttl}"),
            Self::Shared => format!("shared ttl={ttl}"),
            Self::Permits(permits) => format!("permits={permits} ttl={ttl}"),
        }
    }

    /// Reads a value written by [`Kind::value`].
    fn parse(value: &[u8]) -> Option<(Self, i64)> {
        let value = std::str::from_utf8(value).ok()?;
        let (kind, ttl) = value.split_once(" ttl=")?;
        let ttl = ttl.parse::<i64>().ok().filter(|&ttl| ttl > 0)?;
        let kind = match kind {
            "exclusive" => Self::Exclusive,
            "shared" => Self::Shared,
            other => Self::Permits(
                other
                    .strip_prefix("permits=")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)?,
            ),
        };
        Some((kind, ttl))
    }
}

/// One key of a lock's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    key: Vec<u8>,
    revision: i64,
    lease: i64,
    kind: Kind,
    ttl: i64,
}

impl Entry {
    /// Reads a key of the queue whose range is `dir`, if it is one: `{dir}{lease id}` with the
    /// lease id in 16 hex digits, and a lock request as its value. Anything else in the range
    /// (a key of a lock under a longer prefix, as `{prefix}/{name}/` holds the keys of prefix
    /// `{prefix}/{name}`, or a key written by something else) is not part of the queue: it is
    /// ignored, so that it cannot stop or reorder the name's requests.
    fn read(dir: &[u8], kv: &KeyValue) -> Option<Self> {
        Self::parse(dir, kv.key(), kv.value(), kv.create_revision(), kv.lease())
    }

    /// [`Entry::read`] on the parts of a key-value.
    fn parse(dir: &[u8], key: &[u8], value: &[u8], revision: i64, lease: i64) -> Option<Self> {
        let id = key.strip_prefix(dir)?;
        if id.len() != 16 || !id.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let (kind, ttl) = Kind::parse(value)?;
        Some(Self {
            key: key.to_vec(),
            revision,
            lease,
            kind,
            ttl,
        })
    }
}

/// Where a request stands in its queue.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// It holds the lock.
    Held,
    /// It waits; this key's deletion may let it in.
    BehindKey(Vec<u8>),
    /// It waits for a permit: any deletion under the name may let it in.
    BehindAny,
    /// A key ahead of it asks for another kind of lock.
    Mismatch,
}

/// Where a request of `kind` stands behind `ahead`, the name's keys created before its own.
fn standing(kind: Kind, ahead: &[Entry]) -> Standing {
    if ahead.iter().any(|entry| !kind.agrees_with(entry.kind)) {
        return Standing::Mismatch;
    }
    let last = |pick: fn(&&Entry) -> bool| {
        ahead
            .iter()
            .filter(pick)
            .max_by_key(|entry| entry.revision)
            .map(|entry| entry.key.clone())
    };
    match kind {
        Kind::Exclusive => last(|_| true).map_or(Standing::Held, Standing::BehindKey),
        Kind::Shared => {
            last(|entry| entry.kind == Kind::Exclusive).map_or(Standing::Held, Standing::BehindKey)
        }
        Kind::Permits(permits) => {
            if ahead.len() < usize::try_from(permits).unwrap_or(usize::MAX) {
                Standing::Held
            } else {
                Standing::BehindAny
            }
        }
    }
}

/// A lock name as one segment of an etcd key: `%` and `/` escaped, so that no name's
/// `{prefix}/{name}/` range contains another name's keys.
fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A request that failed.
#[derive(Debug)]
enum Failed {
    /// etcd says the lease is gone: it expired or was revoked, and its keys with it.
    LeaseGone,
    /// Anything else: a timeout, a transport error, an error from the server.
    Error(Error),
}

impl Failed {
    fn etcd(what: &str, error: &etcd_client::Error) -> Self {
        // etcd's words for a lease that does not exist: "etcdserver: requested lease not
        // found" on revoke and put, and a renewal answered with TTL 0, which the client
        // reports as "lease not found".
        let gone = match error {
            etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
            etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
            _ => false,
        };
        if gone {
            Self::LeaseGone
        } else {
            Self::Error(Error::Backend {
                reason: format!("etcd {what}: {error}"),
            })
        }
    }

    /// The error to report where a gone lease is not expected.
    fn into_error(self, what: &str) -> Error {
        match self {
            Self::LeaseGone => Error::Backend {
                reason: format!("etcd {what}: the request's lease expired"),
            },
            Self::Error(error) => error,
        }
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self::Error(error)
    }
}

/// A request's place in its queue: its key and lease.
#[derive(Debug)]
struct Queued {
    key: Vec<u8>,
    lease: i64,
    ttl: i64,
    revision: i64,
    /// When the lease's latest grant or renewal was sent, on the backend's clock.
    renewed_at: u64,
}

/// The keys of a name up to a request's own, as read at one revision.
#[derive(Debug)]
struct Snapshot {
    revision: i64,
    /// The request's own key, if it still exists.
    mine: Option<Entry>,
    /// The keys created before it, in creation order.
    ahead: Vec<Entry>,
}

impl Snapshot {
    fn read(revision: i64, kvs: &[KeyValue], dir: &[u8], key: &[u8]) -> Self {
        let entries = kvs.iter().filter_map(|kv| Entry::read(dir, kv)).collect();
        Self::new(revision, entries, key)
    }

    fn new(revision: i64, mut entries: Vec<Entry>, key: &[u8]) -> Self {
        entries.sort_by_key(|entry| entry.revision);
        let mine = entries.iter().position(|entry| entry.key == key);
        let (ahead, mine) = match mine {
            Some(at) => {
                let mine = entries.swap_remove(at);
                entries.retain(|entry| entry.revision < mine.revision);
                (entries, Some(mine))
            }
            None => (Vec::new(), None),
        };
        Self {
            revision,
            mine,
            ahead,
        }
    }
}

/// What one pass of an acquisition found.
enum Attempt {
    Granted(Grant),
    /// Waiting behind others: watch for a change after `revision`.
    Behind {
        watch: Watch,
        revision: i64,
    },
    /// The request's place is lost (its lease ended, or the grant came too late to use):
    /// queue again.
    Requeue,
}

/// What a waiter watches for deletions.
enum Watch {
    Key(Vec<u8>),
    Prefix(Vec<u8>),
}

/// A single-threaded tokio runtime driven by one background thread, which runs the etcd
/// client's requests and its connections' tasks between calls.
struct Driver {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Driver {
    fn start() -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| Error::Backend {
                reason: format!("cannot start the etcd client's runtime: {error}"),
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            // Runs every spawned task until told to stop (or until the sender is dropped).
            let _ = runtime.block_on(stopped);
        });
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` on the runtime and blocks the calling thread until it is done.
    ///
    /// The caller waits on a condition variable, not on tokio's blocking receive, so any
    /// thread may call: a plain one, a `spawn_blocking` closure, or (stalling it meanwhile) an
    /// async runtime's own thread.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Error> {
        let answer = Arc::new(Answer {
            slot: Mutex::new(Slot::Pending),
            ready: Condvar::new(),
        });
        let promise = Promise(Arc::clone(&answer));
        self.handle.spawn(async move {
            let value = future.await;
            promise.fulfil(value);
        });
        let mut slot = answer.slot.lock();
        while matches!(*slot, Slot::Pending) {
            answer.ready.wait(&mut slot);
        }
        match std::mem::replace(&mut *slot, Slot::Lost) {
            Slot::Ready(value) => Ok(value),
            Slot::Pending | Slot::Lost => Err(Error::Backend {
                reason: "the etcd client's request was dropped (its runtime stopped, or it \
                         panicked)"
                    .to_owned(),
            }),
        }
    }
}

/// Where a request's answer waits for the thread blocked on it.
struct Answer<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

enum Slot<T> {
    Pending,
    Ready(T),
    /// The request ended without an answer.
    Lost,
}

/// The request's side of an [`Answer`]: dropped unfulfilled (the task panicked, or the
/// runtime dropped it), it wakes the caller with [`Slot::Lost`], so no caller waits forever.
struct Promise<T>(Arc<Answer<T>>);

impl<T> Promise<T> {
    fn fulfil(self, value: T) {
        *self.0.slot.lock() = Slot::Ready(value);
        // `drop(self)` now finds the slot filled and only wakes the caller.
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        let mut slot = self.0.slot.lock();
        if matches!(*slot, Slot::Pending) {
            *slot = Slot::Lost;
        }
        self.0.ready.notify_all();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only drives the runtime; a panic there has nothing left to report.
            let _ = thread.join();
        }
    }
}

/// Whether the request failed before it left the client: the member's port refused the
/// connection, which tonic reports as a "tcp connect error".
fn never_sent(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("tcp connect error"))
}

/// Mutexes, read-write locks and semaphores with fencing tokens, shared by every process that
/// talks to the same etcd cluster.
///
/// See the [module docs](self) for the recipe, the tokens, the TTL and the runtime. Leases run
/// on `C` (the [`SystemClock`] by default); waiting is FIFO per name and watches etcd rather
/// than polling; acquisition timeouts are measured on `C`.
///
/// ```no_run
/// use infra_dlock::etcd::{EtcdLocks, EtcdOptions};
/// use infra_dlock::{Fence, Locks};
/// use std::time::Duration;
///
/// let endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"];
/// let locks = EtcdLocks::new(&endpoints, EtcdOptions::default())?;
/// let guard = locks.acquire("account-42", Duration::from_secs(10))?;
/// let fence = Fence::new(); // at the resource
/// fence.admit("balance/42", "account-42", guard.token())?;
/// guard.release()?;
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct EtcdLocks<C: Clock = SystemClock> {
    // Declared before the driver, so the client's connections close before its runtime stops.
    client: Client,
    driver: Driver,
    options: EtcdOptions,
    clock: C,
    /// Tells this instance's grants from another's.
    issuer: u64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LockCounters,
}

impl EtcdLocks {
    /// Locks on the system clock, talking to the cluster at `endpoints`
    /// (`http://host:port` each).
    ///
    /// No connection is made until the first call.
    ///
    /// ```
    /// use infra_dlock::etcd::{EtcdLocks, EtcdOptions};
    /// use infra_dlock::Error;
    ///
    /// let locks = EtcdLocks::new(&["http://127.0.0.1:2379"], EtcdOptions::default())?;
    /// # drop(locks);
    /// let none: &[&str] = &[];
    /// assert!(matches!(
    ///     EtcdLocks::new(none, EtcdOptions::default()),
    ///     Err(Error::Backend { .. })
    /// ));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for no endpoints or a malformed one, or if the client's runtime
    /// cannot start.
    pub fn new(endpoints: &[impl AsRef<str>], options: EtcdOptions) -> Result<Self, Error> {
        Self::with_clock(endpoints, options, SystemClock::new())
    }
}

impl<C: Clock> EtcdLocks<C> {
    /// Locks whose leases and acquisition timeouts run on `clock`.
    ///
    /// ```
    /// use infra_common::SystemClock;
    /// use infra_dlock::etcd::{EtcdLocks, EtcdOptions};
    ///
    /// let endpoints = ["http://127.0.0.1:2379"];
    /// let locks = EtcdLocks::with_clock(&endpoints, EtcdOptions::default(), SystemClock::new())?;
    /// # drop(locks);
    /// # Ok::<(), infra_dlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EtcdLocks::new`].
    pub fn with_clock(
        endpoints: &[impl AsRef<str>],
        options: EtcdOptions,
        clock: C,
    ) -> Result<Self, Error> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|endpoint| endpoint.as_ref().to_owned())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Backend {
                reason: "no etcd endpoints given".to_owned(),
            });
        }
        let driver = Driver::start()?;
        // A member without a leader refuses requests at once instead of holding them.
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_require_leader(true);
        let client = driver
            .run(Client::connect(endpoints, Some(connect)))?
            .map_err(|error| Error::Backend {
                reason: format!("etcd endpoints: {error}"),
            })?;
        Ok(Self {
            client,
            driver,
            options,
            clock,
            issuer: next_issuer(),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::LockCounters::unnamed(),
        })
    }

    /// Reports this instance's metrics under `name` (the `locks` label) instead of
    /// `default`. See the [`metrics`](crate::metrics) module: install the recorder first.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::LockCounters::new(name.into());
        self
    }

    /// The clock the leases run on.
    ///
    /// ```
    /// use infra_common::Clock;
    /// use infra_dlock::etcd::{EtcdLocks, EtcdOptions};
    ///
    /// let locks = EtcdLocks::new(&["http://127.0.0.1:2379"], EtcdOptions::default())?;
    /// let now = locks.clock().now_nanos(); // what grants' deadlines are compared with
    /// # let _ = now;
    /// # Ok::<(), infra_dlock::Error>(())
    /// ```
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// `{prefix}/{escaped name}/`: the range of the name's keys.
    fn dir(&self, name: &str) -> Vec<u8> {
        format!("{}/{}/", self.options.prefix, escape(name)).into_bytes()
    }

    /// Runs one request built by `request` on the runtime, within `budget`.
    ///
    /// A request that could not even be sent, because the member the client picked refused
    /// the connection (it is down), is built and sent again, to whichever member the client
    /// picks next, until the budget runs out: the client keeps a member that is down among its
    /// choices, and resending what never left is harmless.
    fn call_within<T, F>(
        &self,
        what: &'static str,
        budget: Duration,
        request: impl Fn(Client) -> F + Send + 'static,
    ) -> Result<T, Failed>
    where
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let client = self.client.clone();
        let attempts = async move {
            loop {
                match request(client.clone()).await {
                    Err(error) if never_sent(&error) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    answer => return answer,
                }
            }
        };
        match self
            .driver
            .run(async move { tokio::time::timeout(budget, attempts).await })?
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(Failed::etcd(what, &error)),
            Err(_) => Err(Failed::Error(Error::Backend {
                reason: format!(
                    "etcd {what}: no answer within {budget:?} (no member reachable, or none \
                     answering); the outcome is unknown"
                ),
            })),
        }
    }

    fn call<T, F>(
        &self,
        what: &'static str,
        request: impl Fn(Client) -> F + Send + 'static,
    ) -> Result<T, Failed>
    where
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.call_within(what, self.options.timeout, request)
    }

    /// Joins the queue of `dir`: a new lease, a key on it, and the keys ahead, read in the
    /// same transaction.
    fn enqueue(&self, dir: &[u8], kind: Kind, ttl: i64) -> Result<(Queued, Snapshot), Failed> {
        let sent = self.clock.now_nanos();
        let granted = self.call("lease grant", move |mut client| async move {
            client.lease_grant(ttl, None).await
        })?;
        let (lease, ttl) = (granted.id(), granted.ttl());
        if ttl <= 0 {
            return Err(Failed::Error(Error::Backend {
                reason: format!("etcd refused a lease: {}", granted.error()),
            }));
        }
        let mut key = dir.to_vec();
        key.extend_from_slice(format!("{lease:016x}").as_bytes());
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.clone(),
                    kind.value(ttl),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::get(dir.to_vec(), Some(GetOptions::new().with_prefix())),
            ]);
        let joined = self
            .call("queueing transaction", move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .and_then(|response| {
                let header = response
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision);
                let read = response.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(get) => Some(get),
                    _ => None,
                });
                match (response.succeeded(), read) {
                    (true, Some(read)) => Ok(Snapshot::read(header, read.kvs(), dir, &key)),
                    _ => Err(Failed::Error(Error::Backend {
                        reason: "etcd queueing transaction: the lock key already existed"
                            .to_owned(),
                    })),
                }
            });
        let snapshot = match joined {
            Ok(snapshot) => snapshot,
            Err(failed) => {
                // The key may exist (a timeout); without renewals it goes with the lease.
                self.revoke_quietly(lease);
                return Err(failed);
            }
        };
        let Some(revision) = snapshot.mine.as_ref().map(|mine| mine.revision) else {
            self.revoke_quietly(lease);
            return Err(Failed::LeaseGone);
        };
        let queued = Queued {
            key,
            lease,
            ttl,
            revision,
            renewed_at: sent,
        };
        Ok((queued, snapshot))
    }

    /// Reads `dir`'s keys up to the request's own.
    fn read(&self, dir: &[u8], queued: &Queued) -> Result<Snapshot, Failed> {
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(queued.revision);
        let range = dir.to_vec();
        let response = self.call("read of the queue", move |mut client| {
            let (range, options) = (range.clone(), options.clone());
            async move { client.get(range, Some(options)).await }
        })?;
        let revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        Ok(Snapshot::read(revision, response.kvs(), dir, &queued.key))
    }

    /// Renews `lease` once; [`Failed::LeaseGone`] if it had expired.
    fn renew(&self, lease: i64) -> Result<(), Failed> {
        self.call("lease renewal", move |mut client| async move {
            // The first answer on the stream is the renewal's; dropping both ends closes it.
            client.lease_keep_alive(lease).await.map(drop)
        })
    }

    /// Revokes `lease`, deleting its key.
    fn revoke(&self, lease: i64) -> Result<(), Failed> {
        self.call("lease revocation", move |mut client| async move {
            client.lease_revoke(lease).await.map(drop)
        })
    }

    /// Revokes `lease` where nothing depends on it: if it fails, the lease and its key run
    /// out by themselves.
    fn revoke_quietly(&self, lease: i64) {
        let _ = self.revoke(lease);
    }

    /// Blocks until something is deleted under `watch` after `revision`, or `limit` passes.
    fn watch(&self, watch: &Watch, revision: i64, limit: Duration) -> Result<(), Failed> {
        let (key, options) = match watch {
            Watch::Key(key) => (key.clone(), WatchOptions::new()),
            Watch::Prefix(dir) => (dir.clone(), WatchOptions::new().with_prefix()),
        };
        // Renewals of the watched lease (a key moved to a new lease) are puts: not wanted.
        let options = options
            .with_start_revision(revision.saturating_add(1))
            .with_filters([WatchFilterType::NoPut]);
        let timeout = self.options.timeout;
        let budget = timeout.saturating_add(limit);
        self.call_within("watch", budget, move |mut client| {
            let (key, options) = (key.clone(), options.clone());
            async move {
                let mut stream = tokio::time::timeout(timeout, client.watch(key, Some(options)))
                    .await
                    .map_err(|_| {
                        etcd_client::Error::WatchError(format!("not created within {timeout:?}"))
                    })??;
                let changed = async {
                    loop {
                        match stream.message().await? {
                            // A cancelled watch (its start was compacted, or the member lost its
                            // leader) also sends the waiter back to read.
                            Some(response)
                                if response.canceled() || !response.events().is_empty() =>
                            {
                                return Ok(());
                            }
                            Some(_) => {}
                            None => return Ok(()),
                        }
                    }
                };
                tokio::time::timeout(limit, changed).await.unwrap_or(Ok(()))
            }
        })
    }

    /// The grant's key, found by its create revision, with the revision of the read.
    fn find(&self, grant: &Grant) -> Result<(Option<Entry>, i64), Failed> {
        let Ok(token) = i64::try_from(grant.token.get()) else {
            return Ok((None, 0));
        };
        let options = GetOptions::new()
            .with_prefix()
            .with_min_create_revision(token)
            .with_max_create_revision(token);
        let dir = self.dir(&grant.name);
        let range = dir.clone();
        let response = self.call("read of the lock key", move |mut client| {
            let (range, options) = (range.clone(), options.clone());
            async move { client.get(range, Some(options)).await }
        })?;
        let revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let entry = response
            .kvs()
            .iter()
            .filter(|kv| kv.create_revision() == token)
            .find_map(|kv| Entry::read(&dir, kv));
        Ok((entry, revision))
    }

    /// One pass of an acquisition: join the queue (or renew the lease and read it again),
    /// then see where the request stands.
    fn attempt(
        &self,
        dir: &[u8],
        name: &LockName,
        access: Access,
        lease: Duration,
        ttl: i64,
        place: &mut Option<Queued>,
    ) -> Result<Attempt, Failed> {
        let kind = Kind::of(access);
        let (queued, snapshot, fresh) = match place.take() {
            None => {
                let (queued, snapshot) = self.enqueue(dir, kind, ttl)?;
                (queued, snapshot, true)
            }
            Some(mut queued) => {
                let every = Duration::from_secs(queued.ttl.unsigned_abs()) / 3;
                if self.clock.elapsed_since(queued.renewed_at) >= every {
                    let sent = self.clock.now_nanos();
                    match self.renew(queued.lease) {
                        Ok(()) => queued.renewed_at = sent,
                        Err(Failed::LeaseGone) => return Ok(Attempt::Requeue),
                        Err(failed) => {
                            *place = Some(queued);
                            return Err(failed);
                        }
                    }
                }
                match self.read(dir, &queued) {
                    Ok(snapshot) => (queued, snapshot, false),
                    Err(failed) => {
                        *place = Some(queued);
                        return Err(failed);
                    }
                }
            }
        };
        if snapshot.mine.is_none() {
            // Our key went with our lease while we waited (etcd issue 11456): never a grant.
            return Ok(Attempt::Requeue);
        }
        match standing(kind, &snapshot.ahead) {
            Standing::Mismatch => {
                self.revoke_quietly(queued.lease);
                Err(Failed::Error(Error::KindMismatch {
                    name: name.to_string(),
                }))
            }
            Standing::BehindKey(key) => {
                let revision = snapshot.revision;
                *place = Some(queued);
                Ok(Attempt::Behind {
                    watch: Watch::Key(key),
                    revision,
                })
            }
            Standing::BehindAny => {
                let revision = snapshot.revision;
                *place = Some(queued);
                Ok(Attempt::Behind {
                    watch: Watch::Prefix(dir.to_vec()),
                    revision,
                })
            }
            Standing::Held => {
                let granted_at = if fresh {
                    queued.renewed_at
                } else {
                    // The hand-over check: a lease that expired cannot be renewed.
                    let sent = self.clock.now_nanos();
                    match self.renew(queued.lease) {
                        Ok(()) => sent,
                        Err(Failed::LeaseGone) => return Ok(Attempt::Requeue),
                        Err(failed) => {
                            *place = Some(queued);
                            return Err(failed);
                        }
                    }
                };
                let grant = Grant {
                    name: LockName::clone(name),
                    access,
                    token: token_of(queued.revision)?,
                    granted_at,
                    lease,
                    issuer: self.issuer,
                    record: 0,
                };
                let now = self.clock.now_nanos();
                if now < grant.deadline_nanos() {
                    Ok(Attempt::Granted(grant))
                } else {
                    // Useless already (the answers took longer than the lease): free it. Asking
                    // again would take as long, so say so rather than queue again forever.
                    self.revoke_quietly(queued.lease);
                    Err(Failed::Error(Error::LeaseSpentOnArrival {
                        lease,
                        took: Duration::from_nanos(now.saturating_sub(granted_at)),
                    }))
                }
            }
        }
    }

    /// Leaves the queue, if in it.
    fn abandon(&self, place: &mut Option<Queued>) {
        if let Some(queued) = place.take() {
            self.revoke_quietly(queued.lease);
        }
    }

    fn check_issuer(&self, grant: &Grant) -> Result<(), Error> {
        if grant.issuer == self.issuer {
            Ok(())
        } else {
            Err(Error::ForeignGrant {
                name: grant.name.to_string(),
                token: grant.token,
            })
        }
    }

    fn expired(grant: &Grant) -> Error {
        Error::LeaseExpired {
            name: grant.name.to_string(),
            token: grant.token,
        }
    }

    /// Sleeps, in real time, before retrying after a failure.
    fn nap(&self, backoff: &mut Duration, give_up_at: Option<u64>) {
        let left =
            give_up_at.map(|at| Duration::from_nanos(at.saturating_sub(self.clock.now_nanos())));
        let nap = left.map_or(*backoff, |left| left.min(*backoff));
        std::thread::sleep(nap.max(Duration::from_millis(1)));
        *backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
    }
}

/// Where a grant's key was found after a lease move whose answer was lost.
#[derive(Debug, PartialEq, Eq)]
enum MoveFound {
    /// On the new lease: the move happened.
    Moved,
    /// On another lease (the old one): the move did not happen, and no longer can once the
    /// new lease is revoked.
    NotMoved,
    /// The key is gone: the grant's lease ran out or was revoked.
    Gone,
}

/// Judges a lease move from a fresh read of the grant's key (`found`).
fn judge_move(found: Option<&Entry>, new_lease: i64) -> MoveFound {
    match found {
        Some(entry) if entry.lease == new_lease => MoveFound::Moved,
        Some(_) => MoveFound::NotMoved,
        None => MoveFound::Gone,
    }
}

/// Ends `grant`'s lease on the client's clock at `now`: its holder must stop.
fn end_now(grant: &mut Grant, now: u64) {
    grant.granted_at = now;
    grant.lease = Duration::ZERO;
}

/// A create revision as a token: etcd's revisions start at 1.
fn token_of(revision: i64) -> Result<FencingToken, Failed> {
    u64::try_from(revision)
        .ok()
        .filter(|&token| token > 0)
        .map(FencingToken::new)
        .ok_or_else(|| {
            Failed::Error(Error::Backend {
                reason: format!("etcd answered a create revision of {revision}"),
            })
        })
}

impl<C: Clock> ServerCalls for EtcdLocks<C> {
    fn request_grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        check_request(name, lease, access)?;
        let dir = self.dir(name);
        let shared_name = LockName::from(name);
        let ttl = self.options.ttl_secs(lease);
        let give_up_at = match wait {
            Wait::Up(timeout) => Some(
                self.clock
                    .now_nanos()
                    .saturating_add(duration_to_nanos(timeout)),
            ),
            Wait::No | Wait::Forever => None,
        };
        let waits = !matches!(wait, Wait::No);
        let mut place = None;
        let mut failing_since = None;
        let mut backoff = Duration::from_millis(1);
        loop {
            let attempt = self.attempt(&dir, &shared_name, access, lease, ttl, &mut place);
            let now = self.clock.now_nanos();
            let timed_out = give_up_at.is_some_and(|at| now >= at);
            match attempt {
                Ok(Attempt::Granted(grant)) => return Ok(Some(grant)),
                Ok(Attempt::Requeue) => {
                    failing_since = None;
                    if !waits || timed_out {
                        return Ok(None);
                    }
                    // The lease ran out while waiting (a pause, or renewals that did not get
                    // through): back off rather than spin through new leases.
                    self.nap(&mut backoff, give_up_at);
                }
                Ok(Attempt::Behind { watch, revision }) => {
                    failing_since = None;
                    backoff = Duration::from_millis(1);
                    let Some(queued) = place.as_ref().filter(|_| waits && !timed_out) else {
                        self.abandon(&mut place);
                        return Ok(None);
                    };
                    // Wake up in time to renew the lease, or to give up.
                    let renew_at = queued.renewed_at.saturating_add(duration_to_nanos(
                        Duration::from_secs(queued.ttl.unsigned_abs()) / 3,
                    ));
                    let until = give_up_at.map_or(renew_at, |at| at.min(renew_at));
                    let limit = Duration::from_nanos(until.saturating_sub(now));
                    if self.watch(&watch, revision, limit).is_err() {
                        // A failed watch is one more failed request; the next pass reads again.
                        failing_since.get_or_insert(now);
                        self.nap(&mut backoff, give_up_at);
                    }
                }
                Err(Failed::Error(
                    error @ (Error::KindMismatch { .. } | Error::LeaseSpentOnArrival { .. }),
                )) => return Err(error),
                Err(failed) => {
                    let error = failed.into_error("acquisition");
                    if !waits {
                        self.abandon(&mut place);
                        return Err(error);
                    }
                    let since = *failing_since.get_or_insert(now);
                    let tolerance = Duration::from_secs(
                        place
                            .as_ref()
                            .map_or(ttl, |queued| queued.ttl)
                            .unsigned_abs(),
                    );
                    if self.clock.elapsed_since(since) >= tolerance {
                        self.abandon(&mut place);
                        return Err(error);
                    }
                    if timed_out {
                        self.abandon(&mut place);
                        return Ok(None);
                    }
                    self.nap(&mut backoff, give_up_at);
                }
            }
        }
    }

    fn request_extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        self.check_issuer(grant)?;
        if self.clock.now_nanos() >= grant.deadline_nanos() {
            // The holder must already have stopped; renewing now could revive a grant that
            // someone else's fence has moved past.
            return Err(Self::expired(grant));
        }
        let lost = |failed: Failed| match failed {
            Failed::LeaseGone => Self::expired(grant),
            Failed::Error(error) => error,
        };
        let (entry, _) = self.find(grant).map_err(lost)?;
        let entry = entry.ok_or_else(|| Self::expired(grant))?;
        let ttl = self.options.ttl_secs(lease);
        let sent = self.clock.now_nanos();
        if ttl <= entry.ttl {
            self.renew(entry.lease).map_err(lost)?;
        } else {
            let granted = self
                .call("lease grant", move |mut client| async move {
                    client.lease_grant(ttl, None).await
                })
                .map_err(lost)?;
            let (new_lease, new_ttl) = (granted.id(), granted.ttl());
            let token = entry.revision;
            let txn = Txn::new()
                .when([Compare::create_revision(
                    entry.key.clone(),
                    CompareOp::Equal,
                    token,
                )])
                .and_then([TxnOp::put(
                    entry.key.clone(),
                    entry.kind.value(new_ttl),
                    Some(PutOptions::new().with_lease(new_lease)),
                )]);
            let moved = self.call("lease move", move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            });
            match moved {
                Ok(response) if response.succeeded() => self.revoke_quietly(entry.lease),
                Ok(_) => {
                    self.revoke_quietly(new_lease);
                    return Err(Self::expired(grant));
                }
                Err(failed) => {
                    // The answer was lost, not necessarily the move: revoking the new lease
                    // now could delete the key under a holder whose deadline still runs. Read
                    // the key again and act on where it is.
                    match self.find(grant) {
                        Ok((found, _)) => match judge_move(found.as_ref(), new_lease) {
                            MoveFound::Moved => self.revoke_quietly(entry.lease),
                            MoveFound::NotMoved => {
                                self.revoke_quietly(new_lease);
                                return Err(lost(failed));
                            }
                            MoveFound::Gone => {
                                self.revoke_quietly(new_lease);
                                return Err(Self::expired(grant));
                            }
                        },
                        Err(_) => {
                            // Still unknown: the key may be on either lease, and either may
                            // be revoked or run out. The holder must stop at once.
                            let error = lost(failed);
                            end_now(grant, self.clock.now_nanos());
                            return Err(error);
                        }
                    }
                }
            }
        }
        grant.granted_at = sent;
        grant.lease = lease;
        Ok(())
    }

    fn request_release(&self, grant: &Grant) -> Result<(), Error> {
        self.check_issuer(grant)?;
        let lost = |failed: Failed| match failed {
            Failed::LeaseGone => Self::expired(grant),
            Failed::Error(error) => error,
        };
        let (entry, _) = self.find(grant).map_err(lost)?;
        let entry = entry.ok_or_else(|| Self::expired(grant))?;
        self.revoke(entry.lease).map_err(lost)
    }

    #[cfg(feature = "metrics")]
    fn counters(&self) -> &crate::metrics::LockCounters {
        &self.metrics
    }
}

impl<C: Clock> Locks for EtcdLocks<C> {
    /// Joins the name's queue and waits for its turn; see the [module docs](self).
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        self.metered_grant(name, access, lease, wait)
    }

    /// Renews the grant's lease: two round trips (find the key, renew its lease), four when
    /// `lease` needs a longer TTL than the key's (a new lease, a transaction moving the key
    /// onto it, the old lease revoked). The client counts `lease` from when it sent the
    /// renewal.
    ///
    /// If the answer to a lease move is lost, the key is read again: found on the new lease,
    /// the move happened and the extension succeeds; found on the old one, the new lease is
    /// revoked and the error reported with the grant unchanged; gone, [`Error::LeaseExpired`].
    /// If even that read fails, the grant's lease is ended on the client's clock (its holder
    /// must stop, as [`Locks::is_held`] then says) and the error is reported.
    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        self.metered_extend(grant, lease)
    }

    /// Revokes the lease of the grant's key, which deletes it: two round trips. Succeeds if
    /// etcd still held the key, even when the client's count of the lease had run out.
    fn release(&self, grant: Grant) -> Result<(), Error> {
        self.metered_release(&grant)
    }

    /// Whether the lease still runs on the client's clock and the grant's key still exists
    /// (one round trip while the lease runs; `false` if etcd cannot be asked).
    fn is_held(&self, grant: &Grant) -> bool {
        if grant.issuer != self.issuer || self.clock.now_nanos() >= grant.deadline_nanos() {
            return false;
        }
        matches!(self.find(grant), Ok((Some(_), _)))
    }

    /// Watches the grant's key until it is deleted or the client's lease runs out.
    fn wait_lost(&self, grant: &Grant) {
        loop {
            if grant.issuer != self.issuer {
                return;
            }
            let left = grant
                .deadline_nanos()
                .saturating_sub(self.clock.now_nanos());
            if left == 0 {
                return;
            }
            let Ok((Some(entry), revision)) = self.find(grant) else {
                return;
            };
            let watch = Watch::Key(entry.key);
            if self
                .watch(&watch, revision, Duration::from_nanos(left))
                .is_err()
            {
                // etcd cannot be asked: like `is_held`, count the grant as lost.
                return;
            }
        }
    }
}

impl<C: Clock> fmt::Debug for EtcdLocks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLocks")
            .field("options", &self.options)
            .field("clock", &self.clock)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A number no other etcd backend instance in this process has; the top two bits keep it
/// apart from the in-process and Redis backends' numbers.
// A process-wide counter of instances, not state the locks share between threads: loom's
// atomics cannot live in a static, and instance numbering is not part of any model.
#[allow(clippy::disallowed_types)]
fn next_issuer() -> u64 {
    static ISSUERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(3 << 62);
    ISSUERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: i64, kind: Kind) -> Entry {
        Entry {
            key: format!("k{revision}").into_bytes(),
            revision,
            lease: revision,
            kind,
            ttl: 5,
        }
    }

    #[test]
    fn a_lost_lease_move_is_judged_by_where_the_key_is_found() {
        let on = |lease| Entry {
            lease,
            ..entry(3, Kind::Exclusive)
        };
        assert_eq!(judge_move(Some(&on(9)), 9), MoveFound::Moved);
        assert_eq!(judge_move(Some(&on(3)), 9), MoveFound::NotMoved);
        assert_eq!(judge_move(None, 9), MoveFound::Gone);
        let mut grant = Grant {
            name: LockName::from("m"),
            access: Access::Exclusive,
            token: FencingToken::new(3),
            granted_at: 100,
            lease: Duration::from_secs(10),
            issuer: 1,
            record: 0,
        };
        end_now(&mut grant, 500);
        assert_eq!(grant.deadline_nanos(), 500);
    }

    #[test]
    fn only_keys_of_the_names_own_shape_join_its_queue() {
        let dir = b"dlock/a/";
        let value = b"exclusive ttl=5";
        let own = Entry::parse(dir, b"dlock/a/00000000000000ff", value, 7, 255).unwrap();
        assert_eq!(
            (own.revision, own.lease, own.kind),
            (7, 255, Kind::Exclusive)
        );
        // Prefix `dlock/a`, name `b`: under `dlock/a/`, but not of name `a`.
        let nested = b"dlock/a/b/00000000000000ff";
        assert_eq!(Entry::parse(dir, nested, value, 8, 255), None);
        // Garbled values and names are ignored, not errors.
        let key = b"dlock/a/00000000000000ff";
        assert_eq!(Entry::parse(dir, key, b"garbage", 9, 255), None);
        assert_eq!(Entry::parse(dir, b"dlock/a/zz", value, 9, 255), None);
        assert_eq!(
            Entry::parse(dir, b"dlock/b/00000000000000ff", value, 9, 1),
            None
        );
    }

    #[test]
    fn a_mutex_waits_for_the_key_just_ahead_and_holds_when_first() {
        assert_eq!(standing(Kind::Exclusive, &[]), Standing::Held);
        let ahead = [
            entry(3, Kind::Shared),
            entry(7, Kind::Exclusive),
            entry(5, Kind::Shared),
        ];
        assert_eq!(
            standing(Kind::Exclusive, &ahead),
            Standing::BehindKey(b"k7".to_vec())
        );
    }

    #[test]
    fn a_reader_waits_only_for_the_last_writer_ahead() {
        let readers = [entry(3, Kind::Shared), entry(4, Kind::Shared)];
        assert_eq!(standing(Kind::Shared, &readers), Standing::Held);
        let writers = [
            entry(2, Kind::Exclusive),
            entry(3, Kind::Shared),
            entry(6, Kind::Exclusive),
            entry(8, Kind::Shared),
        ];
        assert_eq!(
            standing(Kind::Shared, &writers),
            Standing::BehindKey(b"k6".to_vec())
        );
    }

    #[test]
    fn a_permit_holds_among_the_first_n_and_kinds_must_agree() {
        let two = Kind::Permits(2);
        assert_eq!(standing(two, &[entry(1, two)]), Standing::Held);
        assert_eq!(
            standing(two, &[entry(1, two), entry(2, two)]),
            Standing::BehindAny
        );
        assert_eq!(
            standing(two, &[entry(1, Kind::Permits(3))]),
            Standing::Mismatch
        );
        assert_eq!(
            standing(two, &[entry(1, Kind::Exclusive)]),
            Standing::Mismatch
        );
        assert_eq!(standing(Kind::Shared, &[entry(1, two)]), Standing::Mismatch);
        assert_eq!(
            standing(Kind::Exclusive, &[entry(1, two)]),
            Standing::Mismatch
        );
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        for kind in [Kind::Exclusive, Kind::Shared, Kind::Permits(3)] {
            assert_eq!(Kind::parse(kind.value(11).as_bytes()), Some((kind, 11)));
        }
        for garbage in [
            &b"exclusive"[..],
            b"exclusive ttl=0",
            b"exclusive ttl=-3",
            b"permits=0 ttl=3",
            b"permits=x ttl=3",
            b"writer ttl=3",
            b"\xff ttl=3",
        ] {
            assert_eq!(Kind::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn names_are_escaped_so_no_name_is_under_another() {
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("100%"), "100%25");
        assert_eq!(escape("%2F"), "%252F");
        assert_ne!(escape("a%2Fb"), escape("a/b"));
        assert!(!escape("a/b/c").contains('/'));
    }

    #[test]
    fn the_ttl_is_the_lease_and_its_allowance_rounded_up_to_seconds() {
        let options = EtcdOptions::default();
        let ms = Duration::from_millis;
        assert_eq!(options.ttl_secs(ms(1)), 1);
        assert_eq!(options.ttl_secs(ms(500)), 1);
        // 990 ms + 9.9 ms + 2 ms passes a second.
        assert_eq!(options.ttl_secs(ms(990)), 2);
        assert_eq!(options.ttl_secs(Duration::from_secs(10)), 11);
        let none = options.drift_allowance(0, Duration::ZERO);
        assert_eq!(none.ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(none.ttl_secs(crate::MAX_LEASE), 7 * 24 * 3600);
    }

    #[test]
    fn a_request_that_panics_answers_an_error_instead_of_blocking_for_ever() {
        let driver = Driver::start().unwrap();
        assert_eq!(driver.run(async { 7 }), Ok(7));
        let lost = driver.run(async {
            if Kind::parse(b"").is_none() {
                panic!("a panic inside the client");
            }
            7
        });
        assert!(matches!(lost, Err(Error::Backend { .. })), "{lost:?}");
        assert_eq!(driver.run(async { 8 }), Ok(8), "the runtime goes on");
    }

    #[test]
    fn snapshots_keep_the_keys_ahead_in_creation_order() {
        let entries = vec![
            entry(9, Kind::Shared),
            entry(4, Kind::Exclusive),
            entry(6, Kind::Shared),
            entry(2, Kind::Shared),
        ];
        let snapshot = Snapshot::new(12, entries.clone(), b"k6");
        assert_eq!(snapshot.mine, Some(entry(6, Kind::Shared)));
        assert_eq!(
            snapshot.ahead,
            [entry(2, Kind::Shared), entry(4, Kind::Exclusive)]
        );
        let gone = Snapshot::new(12, entries, b"k5");
        assert_eq!((gone.mine, gone.ahead.len()), (None, 0));
    }
}
