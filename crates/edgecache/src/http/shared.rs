//! The shared tier (feature `redis`): a second level in one Redis that many edge processes
//! share, and purges broadcast to all of them through Redis pub/sub.
//!
//! Keys, under a namespace (default `edgecache`):
//!
//! - `<ns>:r:<primary key>`: the latest stored variant of a URL, a [`Record`], kept with
//!   `PX` = the time it stays fresh (an edge reads a record only to serve it fresh, so
//!   neither its stale windows nor the cache's allowance for revalidating are kept).
//! - `<ns>:t:<tag>`: a sorted set of the record keys written with that surrogate key, each
//!   scored with the time (Redis's clock, in milliseconds) its record expires. Every write
//!   prunes the members already expired, so the set holds only records that may still exist
//!   (a tag written to forever does not grow forever), and the set is kept as long as the
//!   longest of them; a purge by tag deletes its members.
//! - `<ns>:purge`: the channel purges are published on.
//! - `<ns>:epoch`: a counter every purge advances; `<ns>:pu:<URL>` and `<ns>:pt:<tag>`: the
//!   epoch of the latest purge of a URL or a tag, kept ten minutes. A fetch reads the epoch
//!   before it asks the origin, and its write is refused if its URL or one of its tags was
//!   purged since: a response from before a purge is not written after it.
//!
//! The HTTP layer is async and [`Connections`] blocks, so every Redis call runs on tokio's
//! blocking pool (`spawn_blocking`); the subscriber owns a thread of its own. A purge by tag
//! deletes keys its script does not declare (the members of the tag's set), and a write spans
//! a record and its tags' sets, so the tier needs one Redis, not a cluster.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use infra_common::Clock;
use infra_common::redis::{Connections, Script};
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use infra_common::sync::thread;
use redis::{RedisError, Value};

use super::keys::PrimaryKey;
use super::purge::PurgeMode;
use super::record::Record;

/// Reads the purge epoch (`KEYS[2]`), then, if `ARGV[2]` is 1, the record with the time it
/// has left, or a marker that it is too large to read.
const READ: &str = r"
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '1' then return {epoch} end
local len = redis.call('STRLEN', KEYS[1])
if len == 0 then return {epoch} end
if len > tonumber(ARGV[1]) then return {epoch, -1} end
return {epoch, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
";

/// Writes a record and adds its key to its tags' sets, scored with its expiry, after removing
/// the members already expired; each set is kept at least as long as the record. Unless its
/// URL or one of its tags was purged after its fetch read the purge epoch `ARGV[3]` (their
/// purge marks are `KEYS[2]` to `KEYS[2 + n]`, the `n` tags' sets the keys after them): the
/// response may be from before that purge, so nothing is written, and the answer is 0. A
/// tag's key holding something other than a sorted set is an error, checked before anything
/// is written: the record could not be listed under the tag, and a purge of the tag would
/// miss it (a script stopped by an error keeps what it wrote before).
const WRITE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local seen = tonumber(ARGV[3])
local tags = (#KEYS - 2) / 2
for i = 2, tags + 2 do
  local purged = redis.call('GET', KEYS[i])
  if purged and tonumber(purged) > seen then return 0 end
end
for i = tags + 3, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'zset' and kind ~= 'none' then
    return redis.error_reply('tag key holds a ' .. kind .. ', not a sorted set')
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = tags + 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
";

/// Deletes the records of a tag and the tag's set, advances the purge epoch (`KEYS[3]`) and
/// marks the tag with it (kept `ARGV[3]` milliseconds), then publishes the purge. A tag's key
/// holding something other than a sorted set lists no records (a write refuses to add to it)
/// and is deleted all the same: the purge still reaches the other edges.
const PURGE_TAG: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'zset' then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do redis.call('DEL', key) end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], redis.call('INCR', KEYS[3]), 'PX', ARGV[3])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
";

/// Deletes the records of a URL (GET and HEAD), advances the purge epoch (`KEYS[4]`) and
/// marks the URL with it (kept `ARGV[3]` milliseconds), then publishes the purge.
const PURGE_URL: &str = r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], redis.call('INCR', KEYS[4]), 'PX', ARGV[3])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
";

/// How long Redis keeps a URL's or a tag's purge mark, by which it refuses the writes of
/// fetches that began before the purge (from an edge that had not heard of it yet, or whose
/// write waited): far longer than a fetch and a queued write take.
const PURGE_MARK_MILLIS: u64 = 10 * 60 * 1000;

/// How often the subscriber looks up from an idle channel to see whether its cache is gone.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(250);
/// How long the subscriber's connection may stay quiet before it asks Redis whether it is
/// still there: a connection that fell silent without closing (a partition, a peer that
/// vanished) looks like an idle channel, and would never deliver another purge.
const SUBSCRIBER_KEEPALIVE: Duration = Duration::from_secs(2);
/// How long the subscriber waits before reconnecting after losing Redis.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// The most reads, and separately the most writes and the most purges, one cache has waiting
/// on Redis at once: past that a read is skipped (a miss), a write dropped and a purge applied
/// here only, each counted as an error, so a Redis that hangs holds at most this many blocking
/// threads (and record bodies) per kind.
pub(crate) const MAX_CALLS_IN_FLIGHT: usize = 64;
/// The first bytes of a purge message, with its version.
const MESSAGE_MAGIC: &[u8; 3] = b"EP\x01";

/// Where the shared tier lives: one Redis, a namespace for the keys, and the timeout of every
/// call. Give it to [`HttpCacheBuilder::shared_tier`](super::HttpCacheBuilder::shared_tier).
///
/// ```no_run
/// use std::time::Duration;
/// use infra_edgecache::http::SharedTier;
///
/// let tier = SharedTier::open("redis://127.0.0.1:6379/", Duration::from_secs(1))?
///     .namespace("shop-edge");
/// # Ok::<(), redis::RedisError>(())
/// ```
pub struct SharedTier {
    client: redis::Client,
    connections: Connections,
    timeout: Duration,
    namespace: String,
}

impl fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTier")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// The tier in the Redis at `url` (`redis://host:port/db`), every call bounded by
    /// `timeout`; no connection is made until the cache is built. The namespace is
    /// `edgecache`.
    ///
    /// # Errors
    ///
    /// A malformed URL.
    pub fn open(url: &str, timeout: Duration) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connections: Connections::open(url, timeout, 16)?,
            timeout,
            namespace: "edgecache".to_owned(),
        })
    }

    /// The prefix of every key and of the purge channel (default `edgecache`): edges that
    /// share it share responses and purges. Keys are the namespace, `:` and a suffix, so a
    /// namespace that is another followed by `:` and more (`shop` and `shop:t`) can name the
    /// same keys as that other one: its purge epoch, for one, is the other's set of a tag.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn record_key(&self, key: &PrimaryKey) -> String {
        format!("{}:r:{}", self.namespace, key.as_str())
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.namespace)
    }

    /// The key of the purge epoch, which every purge advances.
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.namespace)
    }

    /// The key holding the epoch of the latest purge of the URL of `key` (any method).
    fn url_purge_key(&self, key: &PrimaryKey) -> String {
        format!("{}:pu:{}", self.namespace, key.target())
    }

    /// The key holding the epoch of the latest purge of `tag`.
    fn tag_purge_key(&self, tag: &str) -> String {
        format!("{}:pt:{tag}", self.namespace)
    }

    fn channel(&self) -> String {
        format!("{}:purge", self.namespace)
    }
}

/// What the shared tier has counted for one cache, from [`HttpCache::shared_stats`](super::HttpCache::shared_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStats {
    /// Reads that found a usable record (the origin was not asked).
    pub hits: u64,
    /// Reads that found nothing, or a record this request could not use (another variant,
    /// not fresh enough).
    pub misses: u64,
    /// Reads that failed (Redis unreachable, timed out, or refused): served as if there were
    /// no shared tier.
    pub read_errors: u64,
    /// Records that could not be decoded or were over the size limit: treated as misses.
    pub invalid_records: u64,
    /// Records written.
    pub writes: u64,
    /// Records Redis did not write, because their URL or one of their tags was purged after
    /// their fetch began (a write that would have landed after the purge, from an edge that
    /// had not heard of it yet or whose write waited).
    pub writes_refused: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Purges this cache deleted from Redis and published.
    pub purges_published: u64,
    /// Purges that could not be published (Redis unreachable, or too many already waiting on
    /// it): applied here only.
    pub purge_errors: u64,
    /// Purges received from other edges and applied here.
    pub purges_applied: u64,
    /// Messages on the purge channel that were not purges this crate wrote.
    pub invalid_messages: u64,
    /// Times the subscriber subscribed after a time without a subscription: it lost one, or
    /// its first attempts failed. Purges published in between are not replayed, so each time
    /// every response stored here until then was marked stale, to be validated with the origin
    /// before its next use.
    pub resubscriptions: u64,
}

/// One thing the shared tier counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Hit,
    Miss,
    ReadError,
    InvalidRecord,
    Write,
    WriteRefused,
    WriteError,
    PurgePublished,
    PurgeError,
    PurgeApplied,
    InvalidMessage,
    Resubscribed,
}

const EVENTS: usize = 12;

/// The shared tier's counters (and their metrics handles, with the feature).
#[derive(Debug)]
pub(crate) struct SharedCounters {
    counts: [AtomicU64; EVENTS],
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::SharedMetrics,
}

impl SharedCounters {
    fn count(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.count(event);
    }

    fn stats(&self) -> SharedStats {
        let read = |event: Event| self.counts[event as usize].load(Ordering::Relaxed);
        SharedStats {
            hits: read(Event::Hit),
            misses: read(Event::Miss),
            read_errors: read(Event::ReadError),
            invalid_records: read(Event::InvalidRecord),
            writes: read(Event::Write),
            writes_refused: read(Event::WriteRefused),
            write_errors: read(Event::WriteError),
            purges_published: read(Event::PurgePublished),
            purge_errors: read(Event::PurgeError),
            purges_applied: read(Event::PurgeApplied),
            invalid_messages: read(Event::InvalidMessage),
            resubscriptions: read(Event::Resubscribed),
        }
    }
}

/// A purge as broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Url(http::Uri),
    Tag(Box<str>),
}

/// What a read of a URL's record found.
pub(crate) enum Read {
    /// A record, and how long it has been kept in Redis.
    Found(Box<Record>, Duration),
    Absent,
    /// One over the size limit.
    TooLarge,
}

/// What [`Shared::read`] learnt: the purge epoch when the read ran (none if it failed), which a
/// write of the fetch's answer hands back, and the record, if there is one to use.
pub(crate) struct SharedRead {
    pub(crate) epoch: Option<u64>,
    pub(crate) record: Option<(Record, Duration)>,
}

/// A cache's link to the shared tier: the tier, its scripts and counters, and the flag that
/// stops the subscriber when the cache goes.
pub(crate) struct Shared {
    tier: Arc<SharedTier>,
    scripts: Arc<Scripts>,
    counters: Arc<SharedCounters>,
    stop: Arc<AtomicBool>,
    instance: u64,
    max_record_bytes: usize,
    /// The cache's clock, which measures how long a write waits for a blocking thread.
    clock: Arc<Box<dyn Clock>>,
    reads_in_flight: Arc<AtomicUsize>,
    writes_in_flight: Arc<AtomicUsize>,
    purges_in_flight: Arc<AtomicUsize>,
}

struct Scripts {
    read: Script,
    write: Script,
    purge_tag: Script,
    purge_url: Script,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("tier", &self.tier)
            .field("stats", &self.counters.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Shared {
    /// Links a cache to `tier` and starts its subscriber, which hands every purge another
    /// edge publishes to `apply`, and calls `missed` each time it subscribes after a time
    /// without a subscription: after losing one, or after failed first attempts (the purges
    /// published in between are lost).
    pub(crate) fn start(
        tier: SharedTier,
        max_record_bytes: usize,
        clock: Box<dyn Clock>,
        #[cfg(feature = "metrics")] metrics: crate::metrics::SharedMetrics,
        apply: impl Fn(&Target, PurgeMode) + Send + 'static,
        missed: impl Fn() + Send + 'static,
    ) -> Self {
        let counters = Arc::new(SharedCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            #[cfg(feature = "metrics")]
            metrics,
        });
        let shared = Self {
            tier: Arc::new(tier),
            scripts: Arc::new(Scripts {
                read: Script::new(READ, true),
                write: Script::new(WRITE, true),
                purge_tag: Script::new(PURGE_TAG, true),
                purge_url: Script::new(PURGE_URL, true),
            }),
            counters,
            stop: Arc::new(AtomicBool::new(false)),
            instance: instance_id(),
            max_record_bytes,
            clock: Arc::new(clock),
            reads_in_flight: Arc::new(AtomicUsize::new(0)),
            writes_in_flight: Arc::new(AtomicUsize::new(0)),
            purges_in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let subscriber = Subscriber {
            client: shared.tier.client.clone(),
            channel: shared.tier.channel(),
            timeout: shared.tier.timeout,
            instance: shared.instance,
            stop: Arc::clone(&shared.stop),
            counters: Arc::clone(&shared.counters),
        };
        // Detached: it ends within one poll after the cache is dropped.
        drop(thread::spawn(move || subscriber.run(&apply, &missed)));
        shared
    }

    pub(crate) fn stats(&self) -> SharedStats {
        self.counters.stats()
    }

    /// Reads the purge epoch and, if `want_record`, the record of `key`, counting errors and
    /// (with `want_record`) misses.
    ///
    /// The request waits at most the tier's timeout: connecting, and a dead pooled connection's
    /// retry, can make the blocking call itself take several timeouts, and it finishes in the
    /// background (holding its place among [`MAX_CALLS_IN_FLIGHT`]) while the request goes on
    /// to the origin.
    pub(crate) async fn read(&self, key: &PrimaryKey, want_record: bool) -> SharedRead {
        let failed = SharedRead {
            epoch: None,
            record: None,
        };
        let Some(slot) = Slot::take(&self.reads_in_flight) else {
            self.counters.count(Event::ReadError);
            return failed;
        };
        let tier = Arc::clone(&self.tier);
        let scripts = Arc::clone(&self.scripts);
        let keys = [tier.record_key(key), tier.epoch_key()];
        let limit = self.max_record_bytes;
        let call = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let reply: Value =
                tier.connections
                    .script(&scripts.read, &keys, (limit, u8::from(want_record)))?;
            Ok::<_, RedisError>(reply)
        });
        let answer = tokio::time::timeout(self.tier.timeout, call).await;
        let Ok(Ok(Ok(reply))) = answer else {
            self.counters.count(Event::ReadError);
            return failed;
        };
        let Some((epoch, read)) = parse_read(reply) else {
            self.counters.count(Event::InvalidRecord);
            return failed;
        };
        let record = match read {
            Ok(Read::Found(record, kept)) => Some((*record, kept)),
            Ok(Read::Absent) => {
                if want_record {
                    self.counters.count(Event::Miss);
                }
                None
            }
            Ok(Read::TooLarge) | Err(()) => {
                self.counters.count(Event::InvalidRecord);
                None
            }
        };
        SharedRead {
            epoch: Some(epoch),
            record,
        }
    }

    /// Counts a read whose record was used, or found unusable for its request.
    pub(crate) fn count(&self, event: Event) {
        self.counters.count(event);
    }

    /// Writes `record` under `key` for `record.expires_in`, in the background, unless its URL
    /// or one of its tags was purged after its fetch read the purge `epoch`. The time the
    /// write waits for a blocking thread is taken off the time Redis keeps it: the record ages
    /// meanwhile, and its readers take its age from that time.
    pub(crate) fn write(&self, key: &PrimaryKey, record: &Record, epoch: u64) {
        let millis = u64::try_from(record.expires_in.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return;
        }
        let mut keys = vec![self.tier.record_key(key), self.tier.url_purge_key(key)];
        keys.extend(record.tags.iter().map(|tag| self.tier.tag_purge_key(tag)));
        keys.extend(record.tags.iter().map(|tag| self.tier.tag_key(tag)));
        let Some(slot) = Slot::take(&self.writes_in_flight) else {
            self.counters.count(Event::WriteError);
            return;
        };
        let bytes = record.encode();
        let tier = Arc::clone(&self.tier);
        let scripts = Arc::clone(&self.scripts);
        let counters = Arc::clone(&self.counters);
        let clock = Arc::clone(&self.clock);
        let queued = clock.now_nanos();
        drop(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let waited = u64::try_from(clock.elapsed_since(queued).as_millis()).unwrap_or(u64::MAX);
            let millis = millis.saturating_sub(waited);
            if millis == 0 {
                // It expired while it waited.
                return;
            }
            let written: Result<i64, _> =
                tier.connections
                    .script(&scripts.write, &keys, (bytes, millis, epoch));
            counters.count(match written {
                Ok(0) => Event::WriteRefused,
                Ok(_) => Event::Write,
                Err(_) => Event::WriteError,
            });
        }));
    }

    /// Deletes what `target` covers from Redis and publishes it to the other edges: in the
    /// background inside a tokio runtime, at once outside one. With [`MAX_CALLS_IN_FLIGHT`]
    /// purges already waiting on Redis, it is dropped and counted as an error.
    pub(crate) fn publish(&self, target: &Target, mode: PurgeMode) {
        let Some(slot) = Slot::take(&self.purges_in_flight) else {
            self.counters.count(Event::PurgeError);
            return;
        };
        let message = encode_message(self.instance, target, mode);
        let channel = self.tier.channel();
        let (keys, tag) = match target {
            Target::Url(uri) => {
                let get = PrimaryKey::new(&http::Method::GET, uri, &http::HeaderMap::new());
                let head = get.with_method(&http::Method::HEAD);
                (
                    vec![
                        self.tier.record_key(&get),
                        self.tier.record_key(&head),
                        self.tier.url_purge_key(&get),
                        self.tier.epoch_key(),
                    ],
                    false,
                )
            }
            Target::Tag(tag) => (
                vec![
                    self.tier.tag_key(tag),
                    self.tier.tag_purge_key(tag),
                    self.tier.epoch_key(),
                ],
                true,
            ),
        };
        let tier = Arc::clone(&self.tier);
        let scripts = Arc::clone(&self.scripts);
        let counters = Arc::clone(&self.counters);
        let run = move || {
            let _slot = slot;
            let script = if tag {
                &scripts.purge_tag
            } else {
                &scripts.purge_url
            };
            let published: Result<i64, _> =
                tier.connections
                    .script(script, &keys, (channel, message, PURGE_MARK_MILLIS));
            counters.count(if published.is_ok() {
                Event::PurgePublished
            } else {
                Event::PurgeError
            });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            Err(_) => run(),
        }
    }
}

/// One of the [`MAX_CALLS_IN_FLIGHT`] places of a kind of call, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(in_flight: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Self(Arc::clone(in_flight));
        // Dropping `slot` gives the place back when all are taken.
        (taken < MAX_CALLS_IN_FLIGHT).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the read script answered: the purge epoch, then nothing (no record, or not asked
/// for), -1 (too large), or the record and its `PTTL`; `None` for a reply of another shape,
/// and `Err` for a record that does not decode.
fn parse_read(reply: Value) -> Option<(u64, Result<Read, ()>)> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let Some(Value::Int(epoch)) = items.next() else {
        return None;
    };
    let epoch = u64::try_from(epoch).ok()?;
    let read = match (items.next(), items.next(), items.next()) {
        (None, None, None) => Ok(Read::Absent),
        (Some(Value::Int(-1)), None, None) => Ok(Read::TooLarge),
        (Some(Value::BulkString(bytes)), Some(Value::Int(left)), None) => Record::decode(&bytes)
            .map(|record| {
                let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                let kept = record.expires_in.saturating_sub(left);
                Read::Found(Box::new(record), kept)
            })
            .map_err(|_| ()),
        _ => return None,
    };
    Some((epoch, read))
}

/// An id for this cache's purge messages, so it can skip its own.
fn instance_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// `EP` 1, the sender's id (u64), the kind (0 URL, 1 tag), the mode (0 soft, 1 hard), the
/// URL or tag.
fn encode_message(instance: u64, target: &Target, mode: PurgeMode) -> Vec<u8> {
    let (kind, text) = match target {
        Target::Url(uri) => (0, uri.to_string()),
        Target::Tag(tag) => (1, tag.to_string()),
    };
    let mut out = Vec::with_capacity(13 + text.len());
    out.extend_from_slice(MESSAGE_MAGIC);
    out.extend_from_slice(&instance.to_be_bytes());
    out.push(kind);
    out.push(u8::from(mode == PurgeMode::Hard));
    out.extend_from_slice(text.as_bytes());
    out
}

/// The sender, target and mode of a purge message; `None` for anything else.
pub(crate) fn decode_message(bytes: &[u8]) -> Option<(u64, Target, PurgeMode)> {
    let rest = bytes.strip_prefix(MESSAGE_MAGIC)?;
    let (instance, rest) = rest.split_first_chunk::<8>()?;
    let (&[kind, mode], text) = rest.split_first_chunk::<2>()?;
    let mode = match mode {
        0 => PurgeMode::Soft,
        1 => PurgeMode::Hard,
        _ => return None,
    };
    let text = std::str::from_utf8(text).ok()?;
    let target = match kind {
        0 => Target::Url(text.parse().ok()?),
        1 if !text.is_empty() && text.len() <= super::purge::MAX_TAG_BYTES => {
            Target::Tag(text.into())
        }
        _ => return None,
    };
    Some((u64::from_be_bytes(*instance), target, mode))
}

/// The thread that listens for other edges' purges.
struct Subscriber {
    client: redis::Client,
    channel: String,
    timeout: Duration,
    instance: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<SharedCounters>,
}

impl Subscriber {
    fn run(&self, apply: &impl Fn(&Target, PurgeMode), missed: &impl Fn()) {
        // Whether purges may have been published with no subscription here to hear them,
        // while the cache was serving: after a lost subscription, and after a failed attempt,
        // the first one included.
        let mut unheard = false;
        while !self.stop.load(Ordering::Acquire) {
            // Returns when the connection is lost, or could not be made; messages published
            // until the next subscription are not seen.
            if self.listen(apply, missed, &mut unheard).is_err() {
                unheard = true;
                if !self.stop.load(Ordering::Acquire) {
                    std::thread::sleep(RECONNECT_BACKOFF);
                }
            }
        }
    }

    fn listen(
        &self,
        apply: &impl Fn(&Target, PurgeMode),
        missed: &impl Fn(),
        unheard: &mut bool,
    ) -> Result<(), RedisError> {
        let mut connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_write_timeout(Some(self.timeout))?;
        let mut pubsub = connection.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        // Purges published while there was no subscription are gone: what was stored until
        // now may be one of theirs. (Once subscribed: every later purge is seen.)
        if std::mem::replace(unheard, false) {
            missed();
            self.counters.count(Event::Resubscribed);
        }
        pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
        let mut heard = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(error) if error.is_timeout() => {
                    if heard.elapsed() >= SUBSCRIBER_KEEPALIVE {
                        // A PING answered within the timeout shows the subscription alive;
                        // no answer, and the connection is given up for a new one.
                        pubsub.set_read_timeout(Some(self.timeout))?;
                        pubsub.ping::<Value>()?;
                        pubsub.set_read_timeout(Some(SUBSCRIBER_POLL))?;
                        heard = Instant::now();
                    }
                    continue;
                }
                Err(error) => return Err(error),
            };
            heard = Instant::now();
            match decode_message(message.get_payload_bytes()) {
                Some((sender, _, _)) if sender == self.instance => {}
                Some((_, target, mode)) => {
                    apply(&target, mode);
                    self.counters.count(Event::PurgeApplied);
                }
                None => self.counters.count(Event::InvalidMessage),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_messages_round_trip_and_reject_anything_else() {
        let cases = [
            (
                Target::Url("http://a.example/x?y".parse().unwrap()),
                PurgeMode::Hard,
            ),
            (Target::Tag("product-42".into()), PurgeMode::Soft),
        ];
        for (target, mode) in cases {
            let bytes = encode_message(7, &target, mode);
            assert_eq!(decode_message(&bytes), Some((7, target, mode)));
            for cut in 0..bytes.len() - 1 {
                let decoded = decode_message(&bytes[..cut]);
                assert!(decoded.is_none() || cut >= 13, "{cut}");
            }
        }
        assert_eq!(decode_message(b"EP\x01\0\0\0\0\0\0\0\x07\x01\x00"), None);
        assert_eq!(decode_message(b"EP\x01\0\0\0\0\0\0\0\x07\x01\x02tag"), None);
        assert_eq!(decode_message(b"EP\x02\0\0\0\0\0\0\0\x07\x01\x01tag"), None);
        let long = [b"EP\x01\0\0\0\0\0\0\0\x07\x01\x01".as_slice(), &[b'a'; 257]].concat();
        assert_eq!(decode_message(&long), None);
    }
}
