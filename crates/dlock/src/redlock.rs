//! Mutexes over several independent Redis servers (Redlock), with fencing tokens that grow
//! across the servers.
//!
//! A [`Redlock`] asks `N` servers that share nothing (no replication between them) and holds a
//! lock when a majority, `N / 2 + 1`, hold it for the caller. Each server runs the same
//! scripts as a single-server [`RedisLocks`], with its own token counter under the same clock
//! rule. `N` is odd and at least 3 in a deployment that should
//! outlive a server (3 survive one lost server, 5 survive two); an even `N` tolerates no more
//! losses than `N − 1`; any `N ≥ 1` is accepted. Two URLs of the same host and port are
//! refused (one server would count twice toward the majority); two spellings of one host
//! (`localhost`, `127.0.0.1`) are not recognised. The raise uses `SET ... KEEPTTL`, which
//! Redis has since 6.0.
//!
//! # The protocol
//!
//! - **Grant**, round one: the mutex grant script, carrying a random nonce drawn for this
//!   attempt, goes to every server at once (one thread
//!   per server but the first, so a server that does not answer delays the attempt by its own
//!   [`RedisOptions::timeout`]s only — a fresh connection's setup and the request each wait
//!   up to one — not by the other servers' too). A server that cannot be asked counts
//!   as not granting. If fewer than a majority granted, whatever was granted is released on
//!   every server that granted it, and the call waits and asks again (sleeps of 1 ms
//!   doubling up to [`RedisOptions::max_backoff`], each a random half to whole of the
//!   current one, so two callers that split the servers between them do not retry in step),
//!   or gives up as its [`Wait`] says. If fewer than a majority even answered, the call fails
//!   at once with [`Error::Backend`].
//! - **Grant**, round two, *the raise*: each server's token comes from its own counter, so
//!   they differ. The grant's token is `T`, the largest of the granted ones. Every server that
//!   granted is sent a compare-and-raise script: only if the server still holds the lock for
//!   this attempt — the nonce kept beside the key (`{name}:request`, as for a single-server
//!   grant) is this attempt's, and the key holds the number that server gave it, or `T` —
//!   it raises the server's counter to at least `T` and sets the lock key to `T` (keeping its
//!   expiry), so extend and release compare one token on every server. Numbers alone cannot
//!   tell the attempt's key: servers whose counters agree (a name's first grants, whose
//!   counters start from the clock) give equal numbers to different grants, and a key holding
//!   `T` may be another grant's; the nonce tells them apart, and a raise resent after its
//!   answer was lost (it ran) finds its own key at `T` and counts it. The
//!   grant succeeds if a majority raised, and its lease, counted on the client's [`Clock`]
//!   from when round one was **sent**, is still running:
//!   `validity = lease − elapsed − drift`, with the drift allowance of
//!   [`RedisOptions::drift_allowance`] (1 % + 2 ms by default). Otherwise everything is given
//!   back: on each server that granted, the key of this attempt's nonce is freed whether it
//!   holds that server's number or `T`, since a raise whose answer was lost may have run. A lease already spent when round one's answers arrive (then no raise is sent) or
//!   when the raise's answers do fails the call with [`Error::LeaseSpentOnArrival`] (no retry could be
//!   faster); too few servers that still held the lock when raised make the call ask again.
//!
//! Extend, release and is held compare both the grant's token `T` and its nonce, so another
//! attempt's key holding the same number is neither renewed, nor freed, nor counted:
//!
//! - **Extend**: the compare-and-extend script on every server, which renews the nonce with
//!   the key; succeeds if a majority still held the grant, and the new lease again counts
//!   from when the extension was sent.
//! - **Release**: the compare-and-release script on every server; `Ok` if a majority
//!   released the grant. Fewer is [`Error::LeaseExpired`] when a majority answered (the grant had
//!   expired, or was taken over), [`Error::Backend`] when fewer answered; another instance's
//!   grant is [`Error::ForeignGrant`] before any round trip.
//! - **Is held**: the lease runs on the client's clock and a majority hold the grant.
//!
//! # Why tokens grow across the servers
//!
//! Let grants `A` and `B` of one name both succeed, `A` first. `A` raised a majority `R_A`,
//! `B` a majority `R_B`; two majorities of the same servers share one, `s`. On `s` a lock
//! key holds one grant at a time:
//!
//! - if `A` held `s` before `B`, then `B` was granted `s` only after `A`'s key there was
//!   gone, which is after `A`'s raise (the script raised only while `s` held the lock for
//!   `A`'s attempt, known by its nonce, which `B`'s grant on `s` replaced), so the
//!   counter of `s` was at least `T_A` and `B`'s token on `s` is above it: `T_B > T_A`;
//! - if `B` held `s` first, `B`'s key there was gone before `A` was granted `s`. But a key
//!   outlives its grant's success: it is released only after the grant ends or fails, and
//!   expires no earlier than the client's validity ends, which the grant checked at its
//!   success. So `B` succeeded before `A` was granted `s`, before `A` succeeded: not `A`
//!   first.
//!
//! The argument assumes what the single-server backend assumes, on each server: a server
//! keeps its data (keys and counter) or the clock rule covers its loss (its clock, after a
//! restart without data, reads later than when it gave the lost tokens — but a counter raised
//! to another server's `T` is not covered by this server's clock unless the servers' clocks
//! agree, as NTP keeps them, to within a restart); and each server's clock runs at the
//! client's rate to within the drift allowance. Mutual exclusion needs the same two
//! assumptions, and also that no holder outlives its lease; the fence at the resource drops
//! that last one: a holder that pauses past its lease is refused, since the next holder's
//! token is larger.
//!
//! # Only mutexes
//!
//! [`Locks::read`] and [`Locks::permit`] fail with [`Error::UnsupportedAccess`]:
//!
//! - **Semaphores**: `K` holders that each hold a majority of servers do not bound `K` by the
//!   permit count (each server counts only the permits it granted, and the majorities differ).
//! - **Readers**: readers share a server, so two readers that overlap can raise in either
//!   order, and the later reader's token can be below the earlier's `T`: tokens would not grow
//!   with every grant, which [`Locks`] promises.
//!
//! # Safe for correctness?
//!
//! With a fence at the resource, **yes**, under the assumptions above: every later holder's
//! token is larger, so the fence refuses a holder that paused past its lease or whose write
//! arrives late. Without a fence it is an
//! **efficiency** lock, as Redlock always is: exclusion holds only while no holder outlives
//! its lease and servers keep their data, which no timeout can promise.

use std::hash::BuildHasher;
use std::time::Duration;

use infra_common::RandomState;
use infra_common::clock::duration_to_nanos;
use infra_common::redis::Script;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};
use redis::{IntoConnectionInfo, Value};

use crate::error::Error;
use crate::grant::{Access, FencingToken, Grant, LockName, Wait, check_lease, check_request};
use crate::locks::Locks;
use crate::metered::ServerCalls;
use crate::redis::{
    Attempt, RedisLocks, RedisOptions, check_issuer, expired, nap, next_issuer, nonce_text,
    wait_while_held,
};

// Every script below takes the request key (`{name}:request`), which keeps the nonce of the
// grant request that holds the lock key: it tells this attempt's key from another grant's
// that holds the same number (servers whose counters agree give equal numbers to different
// grants). The key holding the number is checked too, so a key that outlived its nonce is
// never taken for this grant's.

/// Raises the token counter `KEYS[2]` to at least `ARGV[3]` (the grant's token) and sets the
/// lock key `KEYS[1]` to it, keeping its expiry, if the request key `KEYS[3]` holds this
/// attempt's nonce `ARGV[1]` and the lock key this server's token `ARGV[2]` or, after a
/// resent raise whose first run raised it, `ARGV[3]`. Tokens are compared as decimal
/// strings, never as Lua's doubles. A counter that is missing, not a positive integer, or
/// below is set, with the day's expiry every counter has ([`COUNTER_IDLE`]). Replies 1 if
/// the key held the grant, else 0.
///
/// [`COUNTER_IDLE`]: crate::redis::COUNTER_IDLE
const RAISE_SCRIPT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[2] and held ~= ARGV[3] then return 0 end
local function below(a, b) return #a < #b or (#a == #b and a < b) end
local counter = redis.call('GET', KEYS[2])
if not (counter and string.find(counter, '^[1-9]%d*$') and not below(counter, ARGV[3])) then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', 86400000)
end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
return 1
";

/// Renews the lease of the lock key `KEYS[1]` and of the request key `KEYS[2]` to `ARGV[3]`
/// ms if they hold the grant's token `ARGV[2]` and nonce `ARGV[1]`. Replies 1 or 0.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] and redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
";

/// Renames the lock key `KEYS[1]` to the released mark `KEYS[2]` if the request key `KEYS[3]`
/// holds the grant's nonce `ARGV[1]` and the lock key its token `ARGV[2]` or `ARGV[3]` (a
/// give-back sends the server's own number and the raise's, since a raise whose answer was
/// lost may have run). A resent release whose first run freed the key finds the mark and the
/// nonce, and is told 1 as well. Replies 1 or 0.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local held = redis.call('GET', KEYS[1])
if held == ARGV[2] or held == ARGV[3] then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
return 0
";

/// Replies 1 if the request key `KEYS[2]` holds the grant's nonce `ARGV[1]` and the lock key
/// `KEYS[1]` its token `ARGV[2]`, else 0.
const HOLDS_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] and redis.call('GET', KEYS[1]) == ARGV[2] then
  return 1
end
return 0
";

/// Why semaphores are refused (see the module docs).
const NO_PERMITS: &str = "holders that each hold a majority of servers are not bounded by the \
                          permit count";
/// Why readers are refused (see the module docs).
const NO_READERS: &str = "overlapping readers raise the servers' counters in either order, so \
                          a later reader's token could be smaller";

/// Mutexes with fencing tokens over several independent Redis servers: a lock is held when a
/// majority of them hold it.
///
/// See the [module docs](self) for the protocol, why tokens grow, and what it assumes. Leases
/// run on `C` (the [`SystemClock`] by default); a waiting acquisition sleeps in real time
/// between attempts and measures its timeout on `C`. Waiting is not FIFO.
///
/// ```no_run
/// use infra_dlock::redis::RedisOptions;
/// use infra_dlock::redlock::Redlock;
/// use infra_dlock::{Fence, Locks};
/// use std::time::Duration;
///
/// let servers = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"];
/// let locks = Redlock::new(&servers, RedisOptions::default())?;
/// let guard = locks.acquire("account-42", Duration::from_secs(10))?;
/// let fence = Fence::new(); // at the resource
/// fence.admit("balance/42", "account-42", guard.token())?;
/// guard.release()?;
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct Redlock<C: Clock = SystemClock> {
    /// One single-server backend per server: its connections and scripts.
    servers: Vec<RedisLocks>,
    scripts: Scripts,
    options: RedisOptions,
    clock: C,
    /// Tells this instance's grants from another's.
    issuer: u64,
    /// Seeds the random share of each backoff.
    jitter: RandomState,
    /// Naps taken so far: each draws a different share.
    naps: AtomicU64,
    /// Seeds the grant requests' nonces, so that no two processes make the same.
    nonces: RandomState,
    /// Grant attempts made so far: no two of this instance's nonces are the same.
    requests: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LockCounters,
}

/// The scripts Redlock runs on each server besides the single-server grant. Each is harmless
/// to resend: a second run finds the keys as the first left them.
struct Scripts {
    raise: Script,
    extend: Script,
    release: Script,
    holds: Script,
}

/// The keys of one name on a server that the scripts compare.
struct NameKeys {
    lock: String,
    request: String,
}

impl NameKeys {
    fn on(server: &RedisLocks, name: &str) -> Self {
        Self {
            lock: server.lock_key(name),
            request: server.request_key(name),
        }
    }
}

/// What one round found on the servers.
struct Tally {
    /// Each server's token of this attempt while it holds the lock for it.
    holding: Vec<Option<FencingToken>>,
    /// Servers that answered.
    answered: usize,
    /// The shortest time a server said another holder keeps the lock.
    held_for: Duration,
    /// Why servers could not be asked.
    failures: Vec<String>,
}

impl Tally {
    fn holding(&self) -> usize {
        self.holding.iter().flatten().count()
    }
}

fn backend(reason: impl Into<String>) -> Error {
    Error::Backend {
        reason: reason.into(),
    }
}

impl Redlock {
    /// Locks on the system clock over the servers at `urls` (`redis://host:port/db` each).
    ///
    /// No connection is made until the first call.
    ///
    /// ```
    /// use infra_dlock::redis::RedisOptions;
    /// use infra_dlock::redlock::Redlock;
    /// use infra_dlock::Error;
    ///
    /// let urls = ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"];
    /// let locks = Redlock::new(&urls, RedisOptions::default())?;
    /// assert_eq!(locks.majority(), 2);
    /// // The same server twice would count twice toward the majority.
    /// let twice = ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7001/1"];
    /// assert!(matches!(
    ///     Redlock::new(&twice, RedisOptions::default()),
    ///     Err(Error::Backend { .. })
    /// ));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] for no server, a malformed URL, two URLs of the same host and port,
    /// or a zero [`RedisOptions::timeout`].
    pub fn new(urls: &[impl AsRef<str>], options: RedisOptions) -> Result<Self, Error> {
        Self::with_clock(urls, options, SystemClock::new())
    }
}

impl<C: Clock> Redlock<C> {
    /// Locks whose leases and acquisition timeouts run on `clock`.
    ///
    /// # Errors
    ///
    /// As [`Redlock::new`].
    pub fn with_clock(
        urls: &[impl AsRef<str>],
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(backend("a Redlock needs at least one server"));
        }
        let mut addresses = Vec::with_capacity(urls.len());
        for url in urls {
            let url = url.as_ref();
            let info = url
                .into_connection_info()
                .map_err(|e| backend(format!("{url}: {e}")))?;
            let address = info.addr().to_string();
            // The same server twice would count its one answer twice toward the majority.
            if addresses.contains(&address) {
                return Err(backend(format!(
                    "server {address} is listed twice; a majority needs distinct servers"
                )));
            }
            addresses.push(address);
        }
        let servers = urls
            .iter()
            .map(|url| RedisLocks::new(url.as_ref(), options.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            servers,
            scripts: Scripts {
                raise: Script::new(RAISE_SCRIPT, true),
                extend: Script::new(EXTEND_SCRIPT, true),
                release: Script::new(RELEASE_SCRIPT, true),
                holds: Script::new(HOLDS_SCRIPT, true),
            },
            options,
            clock,
            issuer: next_issuer(),
            jitter: RandomState::new(),
            naps: AtomicU64::new(0),
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

    /// How many servers make a majority: `N / 2 + 1`.
    pub fn majority(&self) -> usize {
        self.servers.len() / 2 + 1
    }

    /// Runs `call` for every server at once and returns the answers in the servers' order:
    /// the first server's on the calling thread, each other's on a thread of its own, so the
    /// slowest server alone sets how long it takes.
    // Scoped threads, which loom cannot model: each round trip blocks on its own socket, and
    // the Redis backends are tested against real servers, never under loom.
    #[allow(clippy::disallowed_methods)]
    fn on_every_server<T: Send>(&self, call: impl Fn(usize, &RedisLocks) -> T + Sync) -> Vec<T> {
        let call = &call;
        std::thread::scope(|scope| {
            let others: Vec<_> = self
                .servers
                .iter()
                .enumerate()
                .skip(1)
                .map(|(index, server)| scope.spawn(move || call(index, server)))
                .collect();
            let mut answers = Vec::with_capacity(self.servers.len());
            answers.push(call(0, &self.servers[0]));
            for other in others {
                answers.push(
                    other
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            answers
        })
    }

    /// A nonce for one grant attempt, unique across processes: a randomly seeded hash of this
    /// instance's id and a count of its attempts.
    fn next_nonce(&self) -> u64 {
        let count = self.requests.fetch_add(1, Ordering::Relaxed);
        self.nonces.hash_one((self.issuer, count))
    }

    /// Round one: the grant script, carrying the attempt's `nonce`, on every server.
    fn ask_all(&self, name: &str, lease: Duration, nonce: &str) -> Result<Tally, Error> {
        let answers = self.on_every_server(|_, server| {
            server.attempt_as(name, Access::Exclusive, lease, false, nonce)
        });
        let mut tally = Tally {
            holding: vec![None; answers.len()],
            answered: 0,
            held_for: Duration::MAX,
            failures: Vec::new(),
        };
        let mut refusal = None;
        for (index, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(Attempt::Granted(token)) => tally.holding[index] = Some(token),
                Ok(Attempt::Held(held_for)) => tally.held_for = tally.held_for.min(held_for),
                Err(Error::Backend { reason }) => {
                    tally.failures.push(reason);
                    continue;
                }
                // A name in use as another kind, or a counter at its end: no server will
                // grant it, whatever the others say.
                Err(error) => refusal = Some(error),
            }
            tally.answered += 1;
        }
        if let Some(refusal) = refusal {
            self.give_back(name, nonce, &tally.holding, None);
            return Err(refusal);
        }
        Ok(tally)
    }

    /// Round two: raises every server that granted to `top` and returns how many it raised;
    /// their entries in `holding` become `top`, the others keep the token they granted.
    fn raise_all(
        &self,
        name: &str,
        nonce: &str,
        holding: &mut [Option<FencingToken>],
        top: FencingToken,
    ) -> usize {
        let raised = self.on_every_server(|index, server| {
            holding[index].is_some_and(|own| {
                let keys = NameKeys::on(server, name);
                let counter = format!("{}:token", keys.lock);
                let (own, top) = (own.get().to_string(), top.get().to_string());
                let reply = server.run(
                    &self.scripts.raise,
                    &[&keys.lock, &counter, &keys.request],
                    &[nonce, &own, &top],
                );
                matches!(reply, Ok(Value::Int(1)))
            })
        });
        for (slot, raised) in holding.iter_mut().zip(&raised) {
            if *raised {
                *slot = Some(top);
            }
        }
        raised.iter().filter(|raised| **raised).count()
    }

    /// Releases, best effort, on every server that holds the lock for this attempt: under
    /// its own number or, where a raise to `top` was sent, under `top` (a raise whose answer
    /// was lost may have run).
    fn give_back(
        &self,
        name: &str,
        nonce: &str,
        holding: &[Option<FencingToken>],
        top: Option<FencingToken>,
    ) {
        self.on_every_server(|index, server| {
            if let Some(own) = holding[index] {
                // A failure only means that server's key runs out with its lease.
                let _ = self.release_on(server, name, nonce, own, top.unwrap_or(own));
            }
        });
    }

    /// The release script on `server`: whether it freed (or had freed) the key of this
    /// request, holding `token` or `raised`.
    fn release_on(
        &self,
        server: &RedisLocks,
        name: &str,
        nonce: &str,
        token: FencingToken,
        raised: FencingToken,
    ) -> Result<bool, Error> {
        let keys = NameKeys::on(server, name);
        let released = format!("{}:released", keys.lock);
        let reply = server.run(
            &self.scripts.release,
            &[&keys.lock, &released, &keys.request],
            &[nonce, &token.get().to_string(), &raised.get().to_string()],
        )?;
        Ok(matches!(reply, Value::Int(1)))
    }

    /// Releases `grant` (or, with `extend` = `Some(lease in ms)`, extends it) on every server
    /// that still holds it: how many did, and how many answered.
    fn act_on_all(&self, grant: &Grant, extend: Option<&str>) -> (usize, usize) {
        let nonce = nonce_text(grant.record);
        let answers = self.on_every_server(|_, server| match extend {
            Some(lease_ms) => {
                let keys = NameKeys::on(server, &grant.name);
                let token = grant.token.get().to_string();
                server
                    .run(
                        &self.scripts.extend,
                        &[&keys.lock, &keys.request],
                        &[&nonce, &token, lease_ms],
                    )
                    .map(|reply| matches!(reply, Value::Int(1)))
            }
            None => self.release_on(server, &grant.name, &nonce, grant.token, grant.token),
        });
        let held = answers
            .iter()
            .filter(|answer| matches!(answer, Ok(true)))
            .count();
        let answered = answers.iter().filter(|answer| answer.is_ok()).count();
        (held, answered)
    }

    /// The error of an action on `grant` that fewer than a majority of servers confirmed.
    fn not_confirmed(&self, grant: &Grant, answered: usize) -> Error {
        if answered >= self.majority() {
            expired(grant)
        } else {
            self.too_few_answered(answered, &[])
        }
    }

    fn too_few_answered(&self, answered: usize, failures: &[String]) -> Error {
        let mut reason = format!(
            "{answered} of {} servers answered, fewer than a majority of {}",
            self.servers.len(),
            self.majority(),
        );
        if !failures.is_empty() {
            reason = format!("{reason}: {}", failures.join("; "));
        }
        backend(reason)
    }

    /// A random share of `backoff`, from half to all of it.
    fn spread(&self, backoff: Duration) -> Duration {
        let draw = self
            .jitter
            .hash_one(self.naps.fetch_add(1, Ordering::Relaxed));
        let half = duration_to_nanos(backoff) / 2;
        Duration::from_nanos(half + draw % (half + 1))
    }
}

impl<C: Clock> ServerCalls for Redlock<C> {
    fn request_grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        check_request(name, lease, access)?;
        match access {
            Access::Exclusive => {}
            Access::Shared => {
                return Err(Error::UnsupportedAccess {
                    access,
                    reason: NO_READERS,
                });
            }
            _ => {
                return Err(Error::UnsupportedAccess {
                    access,
                    reason: NO_PERMITS,
                });
            }
        }
        let validity = self.options.validity(lease)?;
        let started = self.clock.now_nanos();
        let give_up_at = match wait {
            Wait::Up(timeout) => Some(started.saturating_add(duration_to_nanos(timeout))),
            Wait::No | Wait::Forever => None,
        };
        let shared_name = LockName::from(name);
        let mut backoff = Duration::from_millis(1);
        loop {
            let nonce = self.next_nonce();
            let request = nonce_text(nonce);
            let sent = self.clock.now_nanos();
            let mut tally = self.ask_all(name, lease, &request)?;
            if tally.holding() >= self.majority() {
                let top = tally.holding.iter().flatten().max().copied();
                let top = top.expect("a majority granted, so some server did");
                let grant = Grant {
                    name: LockName::clone(&shared_name),
                    access,
                    token: top,
                    granted_at: sent,
                    lease: validity,
                    issuer: self.issuer,
                    // The attempt's nonce, which release, extend and `is_held` compare.
                    record: nonce,
                };
                // No raise for a lease already spent: it could only be given back.
                let in_time = |redlock: &Self| redlock.clock.now_nanos() < grant.deadline_nanos();
                if in_time(self)
                    && self.raise_all(name, &request, &mut tally.holding, top) >= self.majority()
                    && in_time(self)
                {
                    return Ok(Some(grant));
                }
                self.give_back(name, &request, &tally.holding, Some(top));
                if !in_time(self) {
                    let took = self.clock.elapsed_since(sent);
                    return Err(Error::LeaseSpentOnArrival { lease, took });
                }
                // Too few servers still held it when raised: ask again.
            } else {
                self.give_back(name, &request, &tally.holding, None);
                if tally.answered < self.majority() {
                    return Err(self.too_few_answered(tally.answered, &tally.failures));
                }
            }
            let timed_out = give_up_at.is_some_and(|at| self.clock.now_nanos() >= at);
            if matches!(wait, Wait::No) || timed_out {
                return Ok(None);
            }
            nap(
                &self.clock,
                &mut backoff,
                self.options.backoff_bound(),
                (tally.held_for, give_up_at),
                |backoff| self.spread(backoff),
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
        let (held, answered) = self.act_on_all(grant, Some(&lease_ms));
        if held < self.majority() {
            return Err(self.not_confirmed(grant, answered));
        }
        if self.clock.now_nanos() >= sent.saturating_add(duration_to_nanos(validity)) {
            return Err(expired(grant));
        }
        grant.granted_at = sent;
        grant.lease = validity;
        Ok(())
    }

    fn request_release(&self, grant: &Grant) -> Result<(), Error> {
        check_issuer(self.issuer, grant)?;
        let (released, answered) = self.act_on_all(grant, None);
        if released >= self.majority() {
            Ok(())
        } else {
            Err(self.not_confirmed(grant, answered))
        }
    }

    #[cfg(feature = "metrics")]
    fn counters(&self) -> &crate::metrics::LockCounters {
        &self.metrics
    }
}

impl<C: Clock> Locks for Redlock<C> {
    /// Asks every server for the mutex, two rounds of parallel round trips per attempt; see
    /// the [module docs](self). [`Access::Shared`] and [`Access::Permit`] are
    /// [`Error::UnsupportedAccess`].
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        self.metered_grant(name, access, lease, wait)
    }

    /// Renews the lease on every server that still holds it; a majority must.
    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        self.metered_extend(grant, lease)
    }

    /// Frees the lock on every server that still holds it; a majority must.
    fn release(&self, grant: Grant) -> Result<(), Error> {
        self.metered_release(&grant)
    }

    /// Whether the lease still runs on the client's clock and a majority of servers hold the
    /// grant's token under its request's nonce (one parallel round trip while the lease runs).
    fn is_held(&self, grant: &Grant) -> bool {
        if grant.issuer != self.issuer || self.clock.now_nanos() >= grant.deadline_nanos() {
            return false;
        }
        let nonce = nonce_text(grant.record);
        let token = grant.token.get().to_string();
        let holds = self.on_every_server(|_, server| {
            let keys = NameKeys::on(server, &grant.name);
            let reply = server.run(
                &self.scripts.holds,
                &[&keys.lock, &keys.request],
                &[&nonce, &token],
            );
            matches!(reply, Ok(Value::Int(1)))
        });
        holds.iter().filter(|held| **held).count() >= self.majority()
    }

    /// Asks the servers at most every [`RedisOptions::max_backoff`] (and at the lease's end)
    /// until the grant is no longer held.
    fn wait_lost(&self, grant: &Grant) {
        wait_while_held(&self.clock, grant, self.options.backoff_bound(), || {
            self.is_held(grant)
        });
    }
}

impl<C: Clock> std::fmt::Debug for Redlock<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redlock")
            .field("servers", &self.servers.len())
            .field("options", &self.options)
            .field("clock", &self.clock)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::COUNTER_IDLE;

    #[test]
    fn the_raised_counter_expires_as_counter_idle_says() {
        let expire = format!("'PX', {})", COUNTER_IDLE.as_millis());
        assert!(RAISE_SCRIPT.contains(&expire));
    }

    #[test]
    fn no_servers_or_the_same_server_twice_is_refused() {
        let refused = |urls: &[&str]| match Redlock::new(urls, RedisOptions::default()) {
            Err(Error::Backend { reason }) => reason,
            other => panic!("{urls:?} was accepted: {other:?}"),
        };
        assert!(refused(&[]).contains("at least one server"));
        let twice = refused(&["redis://127.0.0.1:7001", "redis://127.0.0.1:7001/"]);
        assert!(twice.contains("listed twice"), "{twice}");
        let other_db = refused(&["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7001/2"]);
        assert!(other_db.contains("listed twice"), "{other_db}");
        assert!(refused(&["not a url"]).contains("not a url"));
        let zero = RedisOptions::default().timeout(Duration::ZERO);
        assert!(Redlock::new(&["redis://127.0.0.1:7001"], zero).is_err());
        let three = [
            "redis://127.0.0.1:7001",
            "redis://127.0.0.1:7002",
            "redis://127.0.0.1:7003",
        ];
        assert_eq!(
            Redlock::new(&three, RedisOptions::default())
                .unwrap()
                .majority(),
            2
        );
        assert_eq!(
            Redlock::new(&three[..1], RedisOptions::default())
                .unwrap()
                .majority(),
            1
        );
        assert_eq!(
            Redlock::new(&three[..2], RedisOptions::default())
                .unwrap()
                .majority(),
            2
        );
    }

    /// Three real servers, or `None` (the test skips) without `redis-server`.
    fn three_servers() -> Option<Vec<infra_testkit::RedisServer>> {
        (0..3)
            .map(|_| infra_testkit::RedisServer::start())
            .collect()
    }

    fn over(servers: &[infra_testkit::RedisServer]) -> Redlock {
        let urls: Vec<String> = servers
            .iter()
            .map(infra_testkit::RedisServer::url)
            .collect();
        Redlock::new(&urls, RedisOptions::default()).unwrap()
    }

    /// A's grant on one server, under `nonce`: the number that server gave.
    fn granted_on(locks: &Redlock, server: usize, name: &str, nonce: &str) -> FencingToken {
        let lease = Duration::from_secs(30);
        match locks.servers[server]
            .attempt_as(name, Access::Exclusive, lease, false, nonce)
            .unwrap()
        {
            Attempt::Granted(token) => token,
            Attempt::Held(_) => panic!("server {server} refused the attempt"),
        }
    }

    /// Servers give the same number to different grants whenever their counters agree, as
    /// they do for a name locked for the first time (the clock rule starts every counter at
    /// the millisecond × 2^20) or one whose grants all went to the same servers. Here A's
    /// round one is played server by server. A's key on the second server holds F's token
    /// when F is released: the release, sent to every server, must leave A's key alone. Then
    /// A's key there is lost (as an expiry or a restart loses it) and E is granted that
    /// server with exactly A's top. A's raise must not take E's key for its own: with it, A
    /// and E would both hold the lock under one token, which a fence admits twice.
    #[test]
    fn a_raise_or_release_never_takes_another_grants_key_holding_the_same_number() {
        let Some(servers) = three_servers() else {
            return;
        };
        let (name, key, lease) = ("account-9", "dlock:{account-9}", Duration::from_secs(30));
        // Counters far above the clock part, so the tokens are these and not the time's.
        let x: u64 = 1 << 62;
        for server in &servers {
            let before = (x - 1).to_string();
            server
                .command(&["SET", "dlock:{account-9}:token", &before])
                .unwrap();
        }
        // Someone holds the second server while F is granted the other two, both under x.
        servers[1]
            .command(&["SET", key, "1", "PX", "30000"])
            .unwrap();
        let f = over(&servers);
        let f_grant = f
            .grant(name, Access::Exclusive, lease, Wait::No)
            .unwrap()
            .unwrap();
        assert_eq!(f_grant.token.get(), x);
        servers[1].command(&["DEL", key]).unwrap();

        let a = over(&servers);
        let a_nonce = nonce_text(a.next_nonce());
        let a_on_second = granted_on(&a, 1, name, &a_nonce);
        assert_eq!(
            a_on_second.get(),
            x,
            "the second server's number is F's token"
        );
        f.release(f_grant).unwrap();
        assert_eq!(
            servers[1].command(&["EXISTS", key]).unwrap(),
            ":1",
            "F's release took A's key on the second server, which holds F's token, for F's"
        );
        // A's key there is lost.
        servers[1].command(&["DEL", key]).unwrap();
        let a_on_first = granted_on(&a, 0, name, &a_nonce);
        let e = over(&servers);
        let e_grant = e
            .grant(name, Access::Exclusive, lease, Wait::No)
            .unwrap()
            .unwrap();
        assert_eq!(e_grant.token, a_on_first, "E's token is A's top");

        let mut holding = [Some(a_on_first), Some(a_on_second), None];
        let raised = a.raise_all(name, &a_nonce, &mut holding, a_on_first);
        assert!(
            raised < a.majority(),
            "A counted {raised} servers raised, E's key on the second among them: A and E \
             would both hold the lock with token {}",
            e_grant.token.get()
        );
        assert!(e.is_held(&e_grant), "A's attempt left E's hold alone");
    }

    /// A raise whose answers are lost but which ran is sent again: the keys it raised are
    /// recognised by the attempt's nonce and counted, and a give-back of the attempt frees
    /// them though they hold the raised token, not the numbers the servers gave.
    #[test]
    fn a_resent_raise_is_counted_and_its_keys_are_given_back() {
        let Some(servers) = three_servers() else {
            return;
        };
        let (name, key) = ("account-9", "dlock:{account-9}");
        for (server, counter) in servers.iter().zip([6u64 << 60, 5 << 60, 4 << 60]) {
            server
                .command(&["SET", "dlock:{account-9}:token", &counter.to_string()])
                .unwrap();
        }
        let a = over(&servers);
        let nonce = nonce_text(a.next_nonce());
        let own: Vec<_> = (0..3)
            .map(|server| granted_on(&a, server, name, &nonce))
            .collect();
        let top = own.iter().max().copied().unwrap();
        assert_eq!(top, own[0], "the first server gave the largest number");
        let granted = || own.iter().copied().map(Some).collect::<Vec<_>>();

        // The first raise runs on every server; its answers are lost.
        a.raise_all(name, &nonce, &mut granted(), top);
        let mut resent = granted();
        let raised = a.raise_all(name, &nonce, &mut resent, top);
        assert_eq!(
            raised, 3,
            "a resent raise counted {raised} of the 3 servers it raised"
        );

        a.give_back(name, &nonce, &granted(), Some(top));
        for (index, server) in servers.iter().enumerate() {
            assert_eq!(
                server.command(&["EXISTS", key]).unwrap(),
                ":0",
                "server {index} kept the raised key of an attempt that was given back"
            );
        }
    }

    #[test]
    fn a_nap_is_half_to_all_of_the_backoff() {
        let locks = Redlock::new(&["redis://127.0.0.1:7001"], RedisOptions::default()).unwrap();
        let backoff = Duration::from_millis(8);
        let spreads: Vec<_> = (0..200).map(|_| locks.spread(backoff)).collect();
        assert!(
            spreads
                .iter()
                .all(|s| (Duration::from_millis(4)..=backoff).contains(s))
        );
        assert!(spreads.iter().any(|s| *s != spreads[0]), "the share varies");
    }
}
