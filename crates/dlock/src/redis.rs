//! Mutexes, read-write locks and semaphores shared by many processes through one Redis: one
//! round trip per grant
//! attempt, per extension and per release, with fencing tokens that keep growing when Redis
//! loses all or part of its data.
//!
//! Each operation is one `EVALSHA` of a small Lua script, which Redis runs without
//! interleaving; if the server answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`), the same
//! call is sent once as `EVAL`, which also loads the script for the next calls.
//!
//! - **Grant**: if the lock key exists, answer its remaining time; otherwise take the next
//!   token from the name's counter, raised to the server's clock first if it is behind (the
//!   clock rule below), `SET` the lock key to the new token with `PX` = the lease, and answer
//!   the token. The request carries a random nonce, kept beside the key for the lease: a request
//!   resent after its connection failed (see below) whose first run granted the lock finds its
//!   own nonce and gets the same token back, instead of waiting out a lease nobody holds.
//! - **Extend** and **release**: compare the lock key with the grant's token and only then
//!   `PEXPIRE` or remove it, so a grant that expired or was taken over never touches the current
//!   holder. A mutex release renames the key to `{name}:released`, which keeps its token for
//!   what was left of the lease, so a resent release whose first run did remove the key
//!   succeeds too — unless, in between, the lock was granted again and released, which puts
//!   the next holder's token in the mark: then the resend reports [`Error::LeaseExpired`].
//!   (Readers and permits keep no such mark: a resent release of one reports
//!   [`Error::LeaseExpired`].)
//!
//! A request sent on a pooled connection that turns out dead is sent once more on a fresh
//! connection if running it twice is harmless: extend, release and mutex grants; never reader
//! or permit grants, whose outcome is then unknown ([`Error::Backend`]). Any
//! [`Error::Backend`] ends a grant call at once, even under [`Wait::Forever`].
//! - **Semaphores** ([`Locks::permit`]): the holders are a sorted set of their tokens, scored
//!   by their lease's end on the server's clock (`TIME` + lease); a grant drops the ended ones
//!   and adds itself if fewer than `permits` remain, from the same token counter. Extend and
//!   release find the token in the set. The set and the permit count expire with the last
//!   holder. A semaphore name held as a mutex, a mutex name held as a semaphore, or permits
//!   asked for under another count while some are held is [`Error::KindMismatch`].
//! - **Read-write locks** ([`Locks::read`]): the readers are a sorted set like a semaphore's
//!   holders (`dlock:{name}:readers`); the writer is the mutex key. A writer waits for the
//!   readers to end, a reader for the writer.
//!
//! Keys are `{prefix}:{name}` with the name in a hash tag (`dlock:{account-42}`, its counter
//! `dlock:{account-42}:token`, a semaphore's `dlock:{account-42}:permits` and
//! `dlock:{account-42}:permits:count`, a mutex grant's nonce `dlock:{account-42}:request` and
//! a released token `dlock:{account-42}:released`, both expiring with the lease they belong
//! to). `RedisLocks` talks to one server; [`Redlock`](crate::redlock::Redlock) holds mutexes on a
//! majority of several. Redis Cluster is not supported either: a name that starts with `}` makes the
//! hash tag empty, so its keys would not even share a cluster slot. Every key of a name
//! expires: the holds with their leases, and the counter a day after the name's last grant
//! ([`COUNTER_IDLE`]), so a service that locks per-user or per-order names keeps in Redis only
//! the names locked in the last day, and those whose lease (at most [`MAX_LEASE`]) would still
//! run: a hold, its nonce and its released mark live no longer than the lease. A name locked
//! again after its counter expired starts from the server's clock, above every token the old
//! counter gave (the clock rule below, as after a loss of the counter).
//!
//! # The clock rule: tokens grow across a Redis that lost its data
//!
//! A Redis restarted without persistence, an eviction of the counter under `maxmemory`, or
//! — losing only part of the data — a restart from an older snapshot, an append-only file
//! written with `appendfsync everysec` that missed its last second, or a failover to a replica
//! that had not received the last grants would leave a plain counter missing or **behind**,
//! and hand out again tokens already in use: a fence admits a repeated token (the same holder
//! writes many times), so a stalled holder and the new one would both get in. So the counter
//! also follows the server's clock (`TIME`), in the same round trip, like a hybrid logical
//! clock:
//!
//! ```text
//! counter := max(counter, milliseconds since 1970 (server's TIME) × 2^20) + 1
//! ```
//!
//! so a token is `max(previous + 1, now_ms × 2^20 + 1)`. A token issued at server time `T1`
//! is below `(T1 + 1 ms) × 2^20` unless the counter ran more than 2^20 grants per
//! millisecond ahead of the clock, over a billion grants per second, far beyond what one Redis
//! does. So after any loss, rollback or expiry of the counter, or a write that set it to zero
//! or below, the next token is above every token issued before, as long as **the server's
//! wall clock reads later than it did when the last of the lost tokens was issued** — at least
//! one millisecond later; a restart takes longer.
//! On a failover that is the replica's clock: keep the servers' clocks synchronized, as NTP
//! does, to within the time a failover takes; the rule covers a failover only under that
//! assumption. A clock set back across a data loss breaks it. Where that is not enough,
//! make the grants themselves durable: `appendfsync always` on the server, and `WAIT` for the
//! replicas (this backend sends no `WAIT`). The counter never wraps: one at `2^63 − 1`, which
//! the clock part reaches in the year 2248 (or set there or beyond by someone else), cannot
//! grow, and the grant fails with [`Error::TokensExhausted`]; a counter someone set to a value
//! that is not an integer fails it with [`Error::Backend`]. Neither leaves a hold behind.
//!
//! A data loss also loses the holds: the next request is granted at once, while the previous
//! holder may still be within its lease. Only the fence keeps the resource safe then.
//!
//! # Leases and the clock-drift allowance
//!
//! Redis ends a lease on its own clock, counted from when it ran the grant script. The client
//! counts the lease on its [`Clock`] from the moment it **sent** the request, which is never
//! later than the server's start, and sets aside a clock-drift allowance for the server's
//! clock running faster than the client's: a grant's [`Grant::lease`] is the lease asked for
//! minus `lease × drift_permille / 1000 + drift_fixed` (defaults: 1 % + 2 ms, as in the
//! Redlock description; `drift_fixed` is never below [`MIN_DRIFT_FIXED`], 1 ms, since the
//! scripts read the server's clock in whole milliseconds). The lease sent to Redis is the one
//! asked for, rounded up to whole milliseconds, and a reader's or permit's end is scored from
//! the millisecond after the server's `TIME`. So the holder believes it holds the lock for no longer than Redis keeps it,
//! as long as the two clocks' rates differ by less than the allowance — a belief, not a
//! guarantee: a holder can pause right after checking. Hence the fence. The allowance covers
//! clock *rates*, not *jumps*: Redis ends leases on its wall clock, so a forward step of the
//! server's clock (set by hand, or stepped by NTP) ends every lease at once and the locks go
//! to the next requesters while the holders still count theirs. Only the fence helps then.
//!
//! # Safe for correctness?
//!
//! For mutexes and read-write locks (writers [`Fence::admit`](crate::Fence::admit), readers
//! [`Fence::check`](crate::Fence::check)), with a fence at the resource, **yes**, as long as
//! tokens grow: a holder
//! that pauses past its lease, a network that delays its write, a Redis restart that hands the
//! lock to someone else early — in each case the later holder's token is larger, and the fence
//! refuses the earlier one. Tokens grow as long as Redis keeps the counter, and across a loss,
//! a rollback or the expiry of it under the clock rule above. Without a fence, this is an **efficiency**
//! lock only: mutual exclusion holds while no holder outlives its lease and Redis keeps its
//! data, which no timeout can promise. A semaphore is an efficiency limit even with a fence:
//! permits do not exclude each other, so no later permit raises the mark of the resource a
//! stalled permit holder writes to, and nothing refuses its late write.
//!
//! Waiting is not FIFO, for any kind: whoever asks first after the lock is freed gets it. One
//! exception keeps writers from starving: a writer that waits for readers marks itself on
//! each attempt (for 4 × [`RedisOptions::max_backoff`], at most [`MAX_LEASE`]), and readers
//! that ask while the mark stands are told to wait. A writer that stops waiting leaves the
//! mark to expire.

use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use infra_common::RandomState;
use infra_common::clock::duration_to_nanos;
use infra_common::redis::{Connections, Script};
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};
use redis::{RedisError, Value};

use crate::error::Error;
use crate::grant::{
    Access, FencingToken, Grant, LockName, MAX_LEASE, Wait, check_lease, check_request,
};
use crate::locks::Locks;
use crate::metered::ServerCalls;

/// The next token of a name (`KEYS[2]`), into the Lua local `token` as a string (so no
/// precision is lost to Lua's doubles): one above the counter, or above the server's `TIME` in
/// ms × 2^20 if the counter is missing or below that (see the module docs). A counter of zero
/// or below, which only someone else's write can leave, is below the clock too: counting up
/// from it would hand out tokens smaller than the ones already given. The floor is exact as a
/// double (ms < 2^41, times a power of two), and comparisons are on the decimal strings (no
/// leading zeros: longer is larger), never on doubles. The token is counted up on the decimal
/// string in Lua and written back with one `SET`, with the day's expiry. A counter with no room
/// left below 2^63 − 1 answers `{2}`; one that is not an integer in Redis's own spelling (no
/// leading zeros, no `+`) is an error reply. Each grant sets the counter to expire a day later
/// ([`COUNTER_IDLE`]): the clock rule makes a counter gone for a day start above every token
/// it gave, as after a loss.
macro_rules! next_token {
    () => {
        r"
local clock = redis.call('TIME')
local clock_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local floor = string.format('%.0f', clock_ms * 1048576)
local function below(a, b) return #a < #b or (#a == #b and a < b) end
local counter = redis.call('GET', KEYS[2])
local positive = counter and string.find(counter, '^[1-9]%d*$')
if counter and not positive and counter ~= '0' and not string.find(counter, '^%-[1-9]%d*$') then
  return redis.error_reply('ERR the token counter is not an integer')
end
local start = floor
if positive and not below(counter, floor) then start = counter end
if not below(start, '9223372036854775807') then return {2} end
-- start + 1 on the digits: the last digit that is not a 9 grows by one (byte 48 is '0'),
-- the 9s after it turn to 0s; all 9s gain a leading 1.
local nines = #string.match(start, '9*$')
local grows = #start - nines
local head = grows == 0 and '1'
  or string.sub(start, 1, grows - 1) .. (string.byte(start, grows) - 47)
local token = head .. string.rep('0', nines)
redis.call('SET', KEYS[2], token, 'PX', 86400000)
"
    };
}

/// The Lua function `holds(set)`: whether the holder set `set` (a semaphore's permits, a
/// read-write lock's readers) has a holder whose lease runs, dropping the ended ones first.
/// Redis keeps a set until the millisecond after its last holder's end, while the scripts
/// count a holder as ended from that millisecond on: without the drop, a request of another
/// kind in that millisecond would find only ended holders and be told `{3}` (another kind).
/// The server's clock is read only when the set is there.
macro_rules! holds {
    () => {
        r"
local function holds(set)
  if redis.call('EXISTS', set) == 0 then return false end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  return redis.call('EXISTS', set) == 1
end
"
    };
}

/// How long a name's token counter outlives its last grant: a day (the `PX` of
/// `next_token!`'s `SET`, which a macro's text cannot take from here).
pub const COUNTER_IDLE: Duration = Duration::from_secs(24 * 3600);

// Every grant script takes the same keys of one name: KEYS[1] the mutex (or writer) key,
// KEYS[2] the token counter, KEYS[3] a semaphore's holders and KEYS[4] its permit count,
// KEYS[5] the readers of a read-write lock, KEYS[6] a waiting writer's mark and KEYS[7] the
// nonce of the request that was granted the mutex (or writer). The holder
// sets (semaphore, readers) are sorted sets of tokens scored by the end of each lease on the
// server's clock (ms), counted from the millisecond after `TIME` (which the scripts truncate
// to whole ms), so a holder's end is never earlier than `TIME` + its lease; each set expires
// with its last holder. Each script replies `{1, token}`
// when granted, `{0, ms}` when the caller should look again in about `ms`, `{2}` when the
// counter cannot grow, and `{3}` when the name is in use as another kind of lock.

/// Grants the mutex, or the writer of a read-write lock, for `ARGV[1]` ms. A writer that
/// finds readers marks itself waiting for `ARGV[2]` ms (0: does not), which keeps new readers
/// out until it is granted. `ARGV[3]` is the request's nonce, kept in `KEYS[7]` for the lease:
/// a resent request whose first run granted the lock (its answer lost) finds its own nonce and
/// is answered the same grant instead of being told to wait out its own lease. One `EXISTS`
/// of the four keys that could stand in the way lets a free lock skip checking them one by one.
const GRANT_SCRIPT: &str = concat!(
    holds!(),
    r"
local busy = redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[5], KEYS[6]) > 0
if busy then
  if holds(KEYS[3]) then return {3} end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    if redis.call('GET', KEYS[7]) == ARGV[3] then
      return {1, redis.call('GET', KEYS[1])}
    end
    return {0, redis.call('PTTL', KEYS[1])}
  end
  if redis.call('EXISTS', KEYS[5]) == 1 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
    if redis.call('ZCARD', KEYS[5]) > 0 then
      if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[6], 1, 'PX', ARGV[2]) end
      local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
      return {0, tonumber(first[2]) - now}
    end
  end
end
",
    next_token!(),
    r"
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
redis.call('SET', KEYS[7], ARGV[3], 'PX', ARGV[1])
if busy then redis.call('DEL', KEYS[6]) end
return {1, token}
"
);

/// Grants a reader for `ARGV[1]` ms unless a writer holds the lock or waits for it.
const READ_SCRIPT: &str = concat!(
    holds!(),
    r"
if holds(KEYS[3]) then return {3} end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  return {0, redis.call('PTTL', KEYS[6])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
",
    next_token!(),
    r"
redis.call('ZADD', KEYS[5], now + 1 + tonumber(ARGV[1]), token)
local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[5], last[2])
return {1, token}
"
);

/// Grants one of `ARGV[2]` permits for `ARGV[1]` ms, if fewer are held; permits asked for
/// under another count while some are held, or a name held as a mutex or read-write lock, is
/// `{3}`.
const PERMIT_SCRIPT: &str = concat!(
    holds!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 or holds(KEYS[5]) then
  return {3}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local live = redis.call('ZCARD', KEYS[3])
if live > 0 and redis.call('GET', KEYS[4]) ~= ARGV[2] then return {3} end
if live >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end
",
    next_token!(),
    r"
redis.call('ZADD', KEYS[3], now + 1 + tonumber(ARGV[1]), token)
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('SET', KEYS[4], ARGV[2])
redis.call('PEXPIREAT', KEYS[3], last[2])
redis.call('PEXPIREAT', KEYS[4], last[2])
return {1, token}
"
);

/// Renews a permit or a reader if its token `ARGV[1]` is still live in the holder set
/// `KEYS[1]`, for `ARGV[2]` ms; `KEYS[2]` (a semaphore's count, or the set again) expires with
/// the set. Replies 1 or 0.
const SET_EXTEND_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + 1 + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
";

/// Gives a permit or a reader back: removes its token `ARGV[1]` from the holder set `KEYS[1]`,
/// and `KEYS[2]` with the set's last member. Replies 1 if the token was live, else 0.
const SET_RELEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
if tonumber(score) <= now then return 0 end
return 1
";

/// Renews the lease if the key still holds the grant's token. Replies 1 or 0.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Renames the key `KEYS[1]` to `KEYS[2]` if it still holds the grant's token: the lock is
/// free, and the token stays in `KEYS[2]` for what was left of the lease (a rename keeps the
/// value and the expiry), so that a resent release whose first run freed the key (its answer
/// lost) is told 1 as well. Replies 1 or 0.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
";

/// The smallest fixed part of the clock-drift allowance: 1 ms. Redis counts leases and
/// holder scores in whole milliseconds of its clock, so a client deadline without this
/// margin could end up to a millisecond after the server's expiry.
pub const MIN_DRIFT_FIXED: Duration = Duration::from_millis(1);

/// Settings of a [`RedisLocks`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    timeout: Duration,
    prefix: String,
    drift_permille: u32,
    drift_fixed: Duration,
    max_backoff: Duration,
    max_idle_connections: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            prefix: "dlock".to_owned(),
            drift_permille: 10,
            drift_fixed: Duration::from_millis(2),
            max_backoff: Duration::from_millis(50),
            max_idle_connections: 16,
        }
    }
}

impl RedisOptions {
    /// How long to wait for connecting, sending and each answer (default 500 ms). A call that
    /// times out is [`Error::Backend`], with its outcome unknown. A zero timeout, which the
    /// sockets refuse, is refused by [`RedisLocks::new`].
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The prefix of every Redis key (default `dlock`).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The clock-drift allowance: this many thousandths of each lease (default 10, that is
    /// 1 %; at most 999) plus `fixed` (default 2 ms; at least [`MIN_DRIFT_FIXED`], smaller
    /// values are raised to it) are taken off the lease the client counts.
    #[must_use]
    pub fn drift_allowance(self, permille: u32, fixed: Duration) -> Self {
        Self {
            drift_permille: permille.min(999),
            drift_fixed: fixed.max(MIN_DRIFT_FIXED),
            ..self
        }
    }

    /// The longest sleep between two attempts of a waiting acquisition (default 50 ms). Sleeps
    /// start at 1 ms and double, and never outlast the holder's remaining lease. A writer
    /// waiting for readers keeps new readers out for 4 × this, at most
    /// [`MAX_LEASE`].
    #[must_use]
    pub fn max_backoff(self, max_backoff: Duration) -> Self {
        Self {
            max_backoff: max_backoff.max(Duration::from_millis(1)),
            ..self
        }
    }

    /// Connections kept open between calls (default 16).
    #[must_use]
    pub fn max_idle_connections(self, connections: usize) -> Self {
        Self {
            max_idle_connections: connections,
            ..self
        }
    }

    /// The lease the client counts for a request of `lease`: `lease` minus the allowance.
    pub(crate) fn validity(&self, lease: Duration) -> Result<Duration, Error> {
        let allowance = self.allowance(lease);
        match lease.checked_sub(allowance) {
            Some(validity) if !validity.is_zero() => Ok(validity),
            _ => Err(Error::LeaseTooShort { lease, allowance }),
        }
    }

    /// The longest sleep between two attempts.
    pub(crate) fn backoff_bound(&self) -> Duration {
        self.max_backoff
    }

    /// The part of `lease` set aside for clock drift.
    fn allowance(&self, lease: Duration) -> Duration {
        let share = lease.as_nanos() * u128::from(self.drift_permille) / 1000;
        // `lease` is at most a week, so its share fits in a u64 of nanoseconds.
        Duration::from_nanos(u64::try_from(share).unwrap_or(u64::MAX))
            .saturating_add(self.drift_fixed)
    }
}

/// What one grant attempt found.
pub(crate) enum Attempt {
    Granted(FencingToken),
    /// Held by someone else for about this long.
    Held(Duration),
}

/// Mutexes, read-write locks and semaphores with fencing tokens, shared by every process that
/// talks to the same Redis.
///
/// See the [module docs](self) for the scripts, the clock rule and the drift allowance.
/// Leases run on `C` (the [`SystemClock`] by default); a waiting acquisition sleeps in real
/// time between attempts (1 ms, doubling up to [`RedisOptions::max_backoff`], never past the
/// holder's remaining lease), and measures its timeout on `C`. Waiting is not FIFO: whichever
/// waiter asks first after the lock is freed gets it.
///
/// ```no_run
/// use infra_dlock::redis::{RedisLocks, RedisOptions};
/// use infra_dlock::{Fence, Locks};
/// use std::time::Duration;
///
/// let locks = RedisLocks::new("redis://127.0.0.1:6379", RedisOptions::default())?;
/// let guard = locks.acquire("account-42", Duration::from_secs(10))?;
/// let fence = Fence::new(); // at the resource
/// fence.admit("balance/42", "account-42", guard.token())?;
/// guard.release()?;
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct RedisLocks<C: Clock = SystemClock> {
    connections: Connections,
    grant: Script,
    extend: Script,
    release: Script,
    read: Script,
    permit: Script,
    set_extend: Script,
    set_release: Script,
    options: RedisOptions,
    clock: C,
    /// Tells this instance's grants from another's.
    issuer: u64,
    /// Seeds the grant requests' nonces, so that no two processes make the same.
    nonces: RandomState,
    /// Grant requests sent so far: no two of this instance's nonces are the same.
    requests: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LockCounters,
}

fn backend(error: &RedisError) -> Error {
    Error::Backend {
        reason: error.to_string(),
    }
}

fn malformed(what: &str, reply: &Value) -> Error {
    Error::Backend {
        reason: format!("unexpected reply to {what}: {reply:?}"),
    }
}

impl RedisLocks {
    /// Locks on the system clock, talking to `url` (`redis://host:port/db`).
    ///
    /// No connection is made until the first call.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for a malformed URL or a zero [`RedisOptions::timeout`].
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, Error> {
        Self::with_clock(url, options, SystemClock::new())
    }
}

impl<C: Clock> RedisLocks<C> {
    /// Locks whose leases and acquisition timeouts run on `clock`.
    ///
    /// # Errors
    ///
    /// As [`RedisLocks::new`].
    pub fn with_clock(url: &str, options: RedisOptions, clock: C) -> Result<Self, Error> {
        // The sockets refuse a zero timeout: every call would fail as if Redis were down.
        if options.timeout.is_zero() {
            return Err(Error::Backend {
                reason: "RedisOptions::timeout is zero, which no connection accepts".to_owned(),
            });
        }
        let connections = Connections::open(url, options.timeout, options.max_idle_connections)
            .map_err(|e| backend(&e))?;
        Ok(Self {
            connections,
            // A mutex grant that did run holds the key with the request's nonce, so running it
            // again answers the same grant; extend and release compare the token first, and a
            // release that did run leaves its token behind for the resend to find. A second
            // reader or permit grant would be a second hold: never resent.
            grant: Script::new(GRANT_SCRIPT, true),
            extend: Script::new(EXTEND_SCRIPT, true),
            release: Script::new(RELEASE_SCRIPT, true),
            read: Script::new(READ_SCRIPT, false),
            permit: Script::new(PERMIT_SCRIPT, false),
            set_extend: Script::new(SET_EXTEND_SCRIPT, true),
            set_release: Script::new(SET_RELEASE_SCRIPT, true),
            options,
            clock,
            issuer: next_issuer(),
            nonces: RandomState::new(),
            requests: AtomicU64::new(0),
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
    pub fn clock(&self) -> &C {
        &self.clock
    }

    pub(crate) fn lock_key(&self, name: &str) -> String {
        format!("{}:{{{name}}}", self.options.prefix)
    }

    /// Runs `script` with `keys` and `args`: one round trip, two after a `NOSCRIPT`; resent
    /// after a dead pooled connection only if the script is harmless to run twice.
    pub(crate) fn run(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Value, Error> {
        self.connections
            .script(script, keys, args)
            .map_err(|e| backend(&e))
    }

    /// One grant attempt: one round trip. A writer that finds readers and `waits` keeps new
    /// readers out for a few backoff periods.
    pub(crate) fn attempt(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        waits: bool,
    ) -> Result<Attempt, Error> {
        self.attempt_as(name, access, lease, waits, &self.nonce())
    }

    /// [`RedisLocks::attempt`] whose mutex (or writer) request carries `nonce`, kept in
    /// [`RedisLocks::request_key`] while the grant holds.
    pub(crate) fn attempt_as(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        waits: bool,
        nonce: &str,
    ) -> Result<Attempt, Error> {
        let key = self.lock_key(name);
        let keys = [
            format!("{key}:token"),
            format!("{key}:permits"),
            format!("{key}:permits:count"),
            format!("{key}:readers"),
            format!("{key}:writer-waiting"),
            format!("{key}:request"),
        ];
        let [
            counter,
            permits_key,
            count_key,
            readers_key,
            waiting_key,
            request_key,
        ] = keys.each_ref().map(String::as_str);
        let keys = [
            key.as_str(),
            counter,
            permits_key,
            count_key,
            readers_key,
            waiting_key,
            request_key,
        ];
        let lease_ms = lease.as_nanos().div_ceil(1_000_000).to_string();
        let reply = match access {
            Access::Permit { permits } => {
                self.run(&self.permit, &keys, &[&lease_ms, &permits.to_string()])?
            }
            Access::Shared => self.run(&self.read, &keys, &[&lease_ms])?,
            _ => {
                // Bounded by the longest lease, so `PX` stays in the range Redis accepts
                // under any `max_backoff`.
                let mark_ms = if waits {
                    self.options
                        .max_backoff
                        .as_millis()
                        .saturating_mul(4)
                        .clamp(4, MAX_LEASE.as_millis())
                } else {
                    0
                };
                self.run(
                    &self.grant,
                    &keys,
                    &[&lease_ms, &mark_ms.to_string(), nonce],
                )?
            }
        };
        let Value::Array(fields) = &reply else {
            return Err(malformed("a grant", &reply));
        };
        match fields.as_slice() {
            [Value::Int(1), Value::BulkString(token)] => {
                let token = std::str::from_utf8(token)
                    .ok()
                    .and_then(|token| token.parse::<u64>().ok())
                    .filter(|&token| token > 0)
                    .ok_or_else(|| malformed("a grant", &reply))?;
                Ok(Attempt::Granted(FencingToken::new(token)))
            }
            // PTTL is -1 for a key without expiry and -2 for one that just vanished: try
            // again soon either way.
            [Value::Int(0), Value::Int(ms)] => Ok(Attempt::Held(Duration::from_millis(
                u64::try_from(*ms).unwrap_or(0),
            ))),
            [Value::Int(2)] => Err(Error::TokensExhausted),
            [Value::Int(3)] => Err(Error::KindMismatch {
                name: name.to_owned(),
            }),
            _ => Err(malformed("a grant", &reply)),
        }
    }

    /// Runs the extend (`extend` is `Some(lease in ms)`) or release script for the hold of
    /// `name` with `token`; whether Redis still held that token.
    fn compare_and_act(
        &self,
        name: &str,
        access: Access,
        token: FencingToken,
        extend: Option<&str>,
    ) -> Result<bool, Error> {
        let key = self.lock_key(name);
        let token = token.get().to_string();
        let set_keys = match access {
            Access::Permit { .. } => {
                Some([format!("{key}:permits"), format!("{key}:permits:count")])
            }
            Access::Shared => Some([format!("{key}:readers"), format!("{key}:readers")]),
            _ => None,
        };
        let reply = if let Some(set_keys) = &set_keys {
            let keys = [set_keys[0].as_str(), &set_keys[1]];
            match extend {
                Some(lease_ms) => self.run(&self.set_extend, &keys, &[&token, lease_ms])?,
                None => self.run(&self.set_release, &keys, &[&token])?,
            }
        } else {
            match extend {
                Some(lease_ms) => self.run(&self.extend, &[&key], &[&token, lease_ms])?,
                None => {
                    let released = format!("{key}:released");
                    self.run(&self.release, &[&key, &released], &[&token])?
                }
            }
        };
        match reply {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(malformed("a compare-and-act script", &other)),
        }
    }

    /// A nonce for one grant request, unique across processes: a randomly seeded hash of
    /// this instance's id and a count of its requests.
    fn nonce(&self) -> String {
        let count = self.requests.fetch_add(1, Ordering::Relaxed);
        nonce_text(self.nonces.hash_one((self.issuer, count)))
    }

    /// The key that keeps the nonce of the request holding the mutex of `name`.
    pub(crate) fn request_key(&self, name: &str) -> String {
        format!("{}:request", self.lock_key(name))
    }

    /// Whether Redis holds the mutex (or writer) key of `name` with `token`; `false` if it
    /// cannot be asked.
    fn holds_key(&self, name: &str, token: FencingToken) -> bool {
        let key = self.lock_key(name);
        let held = self.connections.run(true, |connection| {
            redis::cmd("GET")
                .arg(&key)
                .query::<Option<String>>(connection)
        });
        matches!(held, Ok(Some(held)) if held == token.get().to_string())
    }
}

/// A grant request's nonce as the grant script keeps it.
pub(crate) fn nonce_text(nonce: u64) -> String {
    format!("{nonce:016x}")
}

/// Refuses a grant that the backend instance `issuer` did not make.
pub(crate) fn check_issuer(issuer: u64, grant: &Grant) -> Result<(), Error> {
    if grant.issuer == issuer {
        Ok(())
    } else {
        Err(Error::ForeignGrant {
            name: grant.name.to_string(),
            token: grant.token,
        })
    }
}

/// The error of a grant whose lease ran out, or that the server no longer holds.
pub(crate) fn expired(grant: &Grant) -> Error {
    Error::LeaseExpired {
        name: grant.name.to_string(),
        token: grant.token,
    }
}

/// Sleeps, on real time, before the next attempt: `spread` of the backoff (the backoff
/// itself, or a random share of it), and doubles `backoff` up to `max_backoff`.
pub(crate) fn nap(
    clock: &impl Clock,
    backoff: &mut Duration,
    max_backoff: Duration,
    (held_for, give_up_at): (Duration, Option<u64>),
    spread: impl FnOnce(Duration) -> Duration,
) {
    let left = give_up_at.map(|at| Duration::from_nanos(at.saturating_sub(clock.now_nanos())));
    std::thread::sleep(next_nap(spread(*backoff), held_for, left));
    *backoff = backoff.saturating_mul(2).min(max_backoff);
}

/// Blocks until `held` says the grant is no longer held, asking at most every `max_backoff`
/// and at the lease's end.
pub(crate) fn wait_while_held(
    clock: &impl Clock,
    grant: &Grant,
    max_backoff: Duration,
    held: impl Fn() -> bool,
) {
    while held() {
        let left = grant.deadline_nanos().saturating_sub(clock.now_nanos());
        std::thread::sleep(Duration::from_nanos(left).clamp(Duration::from_millis(1), max_backoff));
    }
}

/// How long to sleep before the next attempt: the current backoff, but no longer than the
/// holder's remaining lease or the time left to wait, and at least 1 ms (no busy spin).
fn next_nap(backoff: Duration, held_for: Duration, left: Option<Duration>) -> Duration {
    let nap = backoff.min(held_for);
    left.map_or(nap, |left| nap.min(left))
        .max(Duration::from_millis(1))
}

impl<C: Clock> ServerCalls for RedisLocks<C> {
    fn request_grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        check_request(name, lease, access)?;
        let validity = self.options.validity(lease)?;
        let started = self.clock.now_nanos();
        let give_up_at = match wait {
            Wait::Up(timeout) => Some(started.saturating_add(duration_to_nanos(timeout))),
            Wait::No | Wait::Forever => None,
        };
        let shared_name = LockName::from(name);
        let mut backoff = Duration::from_millis(1);
        loop {
            let sent = self.clock.now_nanos();
            let held_for = match self.attempt(name, access, lease, !matches!(wait, Wait::No))? {
                Attempt::Granted(token) => {
                    let grant = Grant {
                        name: LockName::clone(&shared_name),
                        access,
                        token,
                        granted_at: sent,
                        lease: validity,
                        issuer: self.issuer,
                        record: 0,
                    };
                    if self.clock.now_nanos() < grant.deadline_nanos() {
                        return Ok(Some(grant));
                    }
                    // Useless already (the reply took longer than the lease): free it for
                    // the others; a failure only means it runs out by itself. Asking again
                    // would take as long, so a lease this short can never be held: say so
                    // rather than retry forever.
                    let took = self.clock.elapsed_since(sent);
                    let _ = self.compare_and_act(name, access, token, None);
                    return Err(Error::LeaseSpentOnArrival { lease, took });
                }
                Attempt::Held(held_for) => held_for,
            };
            let timed_out = give_up_at.is_some_and(|at| self.clock.now_nanos() >= at);
            if matches!(wait, Wait::No) || timed_out {
                return Ok(None);
            }
            nap(
                &self.clock,
                &mut backoff,
                self.options.max_backoff,
                (held_for, give_up_at),
                |backoff| backoff,
            );
        }
    }

    fn request_extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        check_issuer(self.issuer, grant)?;
        let validity = self.options.validity(lease)?;
        let sent = self.clock.now_nanos();
        if sent >= grant.deadline_nanos() {
            // The holder must already have stopped; renewing now could revive a grant that
            // someone else's fence has moved past.
            return Err(expired(grant));
        }
        let lease_ms = lease.as_nanos().div_ceil(1_000_000).to_string();
        if self.compare_and_act(&grant.name, grant.access, grant.token, Some(&lease_ms))? {
            grant.granted_at = sent;
            grant.lease = validity;
            Ok(())
        } else {
            Err(expired(grant))
        }
    }

    fn request_release(&self, grant: &Grant) -> Result<(), Error> {
        check_issuer(self.issuer, grant)?;
        if self.compare_and_act(&grant.name, grant.access, grant.token, None)? {
            Ok(())
        } else {
            Err(expired(grant))
        }
    }

    #[cfg(feature = "metrics")]
    fn counters(&self) -> &crate::metrics::LockCounters {
        &self.metrics
    }
}

impl<C: Clock> Locks for RedisLocks<C> {
    /// Asks Redis for the lock, one round trip per attempt; see [`RedisLocks`] for waiting.
    ///
    /// A grant that arrives after its whole (shortened) lease has passed on the client's clock
    /// is given back at once and the call fails with [`Error::LeaseSpentOnArrival`]: the lease
    /// is not longer than a round trip, and no retry would do better. A failed round trip
    /// ([`Error::Backend`]) ends the call at once, whatever `wait` says, since a timed-out
    /// request may or may not have been granted: the caller decides whether to ask again.
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        self.metered_grant(name, access, lease, wait)
    }

    /// Renews the lease in one round trip: Redis keeps the key for `lease` from now, the
    /// client counts `lease` minus the allowance from the moment it sent the request.
    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        self.metered_extend(grant, lease)
    }

    /// Frees the lock key if it still holds this grant's token (for a mutex or writer, by
    /// renaming it to the name's released mark), in one round trip. Succeeds
    /// if Redis still held the grant, even when the client's shortened lease had run out, and
    /// when a mutex release is resent after its first run released the grant.
    fn release(&self, grant: Grant) -> Result<(), Error> {
        self.metered_release(&grant)
    }

    /// Whether the lease still runs on the client's clock and Redis still holds the grant's
    /// token (one round trip while the lease runs; `false` if Redis cannot be asked).
    fn is_held(&self, grant: &Grant) -> bool {
        if grant.issuer != self.issuer || self.clock.now_nanos() >= grant.deadline_nanos() {
            return false;
        }
        let key = self.lock_key(&grant.name);
        let token = grant.token.get().to_string();
        let set_key = match grant.access {
            Access::Permit { .. } => Some(format!("{key}:permits")),
            Access::Shared => Some(format!("{key}:readers")),
            _ => None,
        };
        if let Some(set_key) = set_key {
            // The client's deadline, checked above, ends before the server's expiry.
            let held = self.connections.run(true, |connection| {
                redis::cmd("ZSCORE")
                    .arg(&set_key)
                    .arg(&token)
                    .query::<Option<String>>(connection)
            });
            return matches!(held, Ok(Some(_)));
        }
        self.holds_key(&grant.name, grant.token)
    }

    /// Asks Redis at most every [`RedisOptions::max_backoff`] (and at the lease's end) until
    /// the grant is no longer held.
    fn wait_lost(&self, grant: &Grant) {
        wait_while_held(&self.clock, grant, self.options.max_backoff, || {
            self.is_held(grant)
        });
    }
}

impl<C: Clock> fmt::Debug for RedisLocks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocks")
            .field("options", &self.options)
            .field("clock", &self.clock)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A number no other Redis backend instance in this process has; the top bit keeps it apart
/// from the in-process backend's numbers, which count up from 1.
// A process-wide counter of instances, not state the locks share between threads: loom's
// atomics cannot live in a static, and instance numbering is not part of any model.
#[allow(clippy::disallowed_types)]
pub(crate) fn next_issuer() -> u64 {
    static ISSUERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 63);
    ISSUERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_expires_as_counter_idle_says() {
        let expire = format!(
            "redis.call('SET', KEYS[2], token, 'PX', {})",
            COUNTER_IDLE.as_millis()
        );
        assert!(next_token!().contains(&expire));
    }

    /// What `next_token!` makes of `counter` with the server's clock at `secs` seconds: the
    /// token, `None` for a counter with no room left (`{2}`), computed on integers.
    fn expected_token(counter: Option<i128>, secs: u64) -> Option<u64> {
        let floor = i128::from(secs * 1000) << 20;
        let start = counter.map_or(floor, |counter| counter.max(floor));
        (start < i128::from(i64::MAX)).then(|| u64::try_from(start + 1).unwrap())
    }

    /// `next_token!` run against a real Redis whose `TIME` is made to read `ARGV[1]` seconds
    /// (the counter is `KEYS[2]`, as in the grant scripts): every decimal-string count-up
    /// agrees with integer arithmetic, for a clock that reads any year (before 2000 the clock
    /// part has fewer than 19 digits, so carries reach the first digit and all 9s gain one),
    /// counters behind, at, ahead of the clock and at the end of the range, and counters of
    /// zero or below.
    #[test]
    fn the_decimal_count_up_agrees_with_integer_arithmetic() {
        let Some(server) = infra_testkit::RedisServer::start() else {
            return;
        };
        let mut redis = connect(&server);
        // A `redis` of the script's own whose `TIME` reads the given second.
        let script = concat!(
            "local server = redis\n",
            "local redis = setmetatable({call = function(command, ...)\n",
            "  if command == 'TIME' then return {ARGV[1], '0'} end\n",
            "  return server.call(command, ...)\n",
            "end}, {__index = server})\n",
            next_token!(),
            "return {1, token}",
        );
        let mut run = |counter: Option<&str>, secs: u64| -> Option<u64> {
            let mut reset = redis::cmd("DEL");
            reset.arg("counter");
            if let Some(counter) = counter {
                reset = redis::cmd("SET");
                reset.arg("counter").arg(counter);
            }
            let () = reset.query(&mut redis).unwrap();
            let reply: Value = redis::cmd("EVAL")
                .arg(script)
                .arg(2)
                .arg("lock")
                .arg("counter")
                .arg(secs)
                .query(&mut redis)
                .unwrap();
            match reply {
                Value::Array(fields) if fields == [Value::Int(2)] => None,
                Value::Array(fields) => {
                    let [Value::Int(1), Value::BulkString(token)] = fields.as_slice() else {
                        panic!("{fields:?}");
                    };
                    let token: u64 = std::str::from_utf8(token).unwrap().parse().unwrap();
                    let stored: u64 = redis::cmd("GET").arg("counter").query(&mut redis).unwrap();
                    assert_eq!(stored, token);
                    Some(token)
                }
                other => panic!("{other:?}"),
            }
        };
        let max = i128::from(i64::MAX);
        let mut counters: Vec<i128> = vec![0, -1, -7, 1, 9, 99, 999_999_999_999, max - 1, max];
        counters.extend((1..=19).map(|digits| 10_i128.pow(digits) - 1));
        // A fixed pseudo-random spread over the whole range and just around each clock.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 1
        };
        counters.extend((0..300).map(|_| i128::from(next())));
        for secs in [1, 1_000, 946_684_799, 1_800_000_000, 4_000_000_000] {
            let floor = i128::from(secs * 1000) << 20;
            counters.extend([floor - 1, floor, floor + 1, floor + 9_999]);
            for &counter in &counters {
                let text = counter.to_string();
                assert_eq!(
                    run(Some(&text), secs),
                    expected_token(Some(counter), secs),
                    "counter {text} at {secs} s"
                );
            }
            assert_eq!(
                run(None, secs),
                expected_token(None, secs),
                "none at {secs} s"
            );
        }
    }

    /// Sets `lock` to `token` for 30 s, as a grant does.
    /// A plain connection to the test's server, for calling the scripts directly.
    fn connect(server: &infra_testkit::RedisServer) -> redis::Connection {
        redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn hold(redis: &mut redis::Connection, token: &str) {
        let () = redis::cmd("SET")
            .arg("lock")
            .arg(token)
            .arg("PX")
            .arg(30_000)
            .query(redis)
            .unwrap();
    }

    /// Runs the release script for `token` on `lock` and its mark `lock:released`.
    fn release(redis: &mut redis::Connection, token: &str) -> i64 {
        redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(2)
            .arg("lock")
            .arg("lock:released")
            .arg(token)
            .query(redis)
            .unwrap()
    }

    /// The released mark keeps only the last release's token: a release resent after the
    /// lock was granted again and released (renaming the next holder's key over the mark)
    /// finds neither its key nor its mark, and is told 0.
    #[test]
    fn a_later_release_takes_the_place_of_an_earlier_ones_mark() {
        let Some(server) = infra_testkit::RedisServer::start() else {
            return;
        };
        let mut redis = connect(&server);
        hold(&mut redis, "11");
        assert_eq!(release(&mut redis, "11"), 1);
        assert_eq!(release(&mut redis, "11"), 1, "a resend finds its mark");
        hold(&mut redis, "12");
        assert_eq!(release(&mut redis, "11"), 1, "still its mark");
        let held: String = redis::cmd("GET").arg("lock").query(&mut redis).unwrap();
        assert_eq!(held, "12", "the next holder's key is left alone");
        assert_eq!(release(&mut redis, "12"), 1);
        assert_eq!(
            release(&mut redis, "11"),
            0,
            "the mark is the next holder's now"
        );
        assert_eq!(release(&mut redis, "12"), 1);
    }

    #[test]
    fn naps_follow_the_backoff_within_the_lease_and_the_wait_and_never_spin() {
        let ms = Duration::from_millis;
        assert_eq!(next_nap(ms(8), ms(100), None), ms(8));
        assert_eq!(
            next_nap(ms(8), ms(3), None),
            ms(3),
            "the holder's lease ends first"
        );
        assert_eq!(
            next_nap(ms(8), ms(100), Some(ms(5))),
            ms(5),
            "the wait ends first"
        );
        assert_eq!(next_nap(ms(8), Duration::ZERO, Some(Duration::ZERO)), ms(1));
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound_and_the_allowance_is_a_share_plus_a_constant() {
        let clock = SystemClock::new();
        let bound = RedisOptions::default().max_backoff;
        let mut backoff = Duration::from_millis(1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(backoff.as_millis());
            // A zero wait keeps each sleep at the 1 ms floor.
            nap(
                &clock,
                &mut backoff,
                bound,
                (Duration::ZERO, Some(0)),
                |b| b,
            );
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 50, 50]);
        // An unbounded backoff saturates instead of overflowing.
        let unbounded = RedisOptions::default()
            .max_backoff(Duration::MAX)
            .max_backoff;
        let mut backoff = Duration::from_secs(u64::MAX / 2 + 1);
        nap(
            &clock,
            &mut backoff,
            unbounded,
            (Duration::ZERO, Some(0)),
            |b| b,
        );
        assert_eq!(backoff, Duration::MAX);
        let options = RedisOptions::default();
        assert_eq!(
            options.allowance(Duration::from_secs(1)),
            Duration::from_millis(12)
        );
        let lenient = options.drift_allowance(5_000, Duration::from_millis(3));
        assert_eq!(
            lenient.allowance(Duration::from_secs(1)),
            Duration::from_millis(1002)
        );
    }

    #[test]
    fn the_fixed_allowance_is_never_below_one_millisecond() {
        // Redis truncates its clock to whole ms: with no fixed allowance the client's deadline
        // could outlive the server's expiry by up to a millisecond.
        let options = RedisOptions::default().drift_allowance(0, Duration::ZERO);
        assert_eq!(options.allowance(Duration::from_secs(1)), MIN_DRIFT_FIXED);
        let options = RedisOptions::default().drift_allowance(0, Duration::from_micros(10));
        assert_eq!(options.allowance(Duration::from_secs(1)), MIN_DRIFT_FIXED);
    }
}
