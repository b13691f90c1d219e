//! The work queue over Redis Streams (feature `redis`): one queue shared by many processes.
//!
//! A [`RedisQueue`] speaks the embedded [`WorkQueue`](crate::queue::WorkQueue)'s language —
//! [`Message`], [`Delivery`], [`Receipt`], [`Sent`], [`DeadLetter`], the same refusals — over
//! one Redis stream and one consumer group. Each send, receive, settle and stats call is one
//! `EVALSHA` of a small Lua script, which Redis runs without interleaving (`EVAL` once after a
//! `NOSCRIPT`), and so is reading dead letters:
//!
//! - **send**: `XADD` with the id `0-*`, so a message's stream id is `0-(offset + 1)` and its
//!   offset a plain number as in the embedded queue. With a message id and a dedup window,
//!   the same script first looks up the id's key and, after the `XADD`, sets it with
//!   `PX` = the window; a repeated id within the window stores nothing and answers the first
//!   send's offset. A send to a queue holding `capacity` unsettled messages is
//!   [`Error::Full`]. After an entry another client added with a time-based id (`XADD … *`),
//!   Redis refuses every `0-*`: the send then dead-letters such entries (at most 64 per call)
//!   and sets the stream's last id, and the group's last-delivered id if it was past them,
//!   back to the queue's own (`XSETID`, `XGROUP SETID`), so later messages are stored and
//!   delivered.
//! - **receive**: `XPENDING … IDLE` finds the lowest-id entry whose delivery has been idle for
//!   the visibility timeout (a lease that ran out, or a nack whose delay is over) and `XCLAIM`
//!   takes it — a redelivery; only if there is none does `XREADGROUP >` read a new one. The
//!   attempt number is the delivery count of the pending entries list (PEL), which both
//!   commands raise by one. An entry claimed for the `max_deliveries + 1`-th time is instead
//!   moved to the dead-letter stream (`XADD` there, `XACK` and `XDEL` here, in the same
//!   script) and the search goes on, for at most 64 of them per receive (then a new message
//!   is read, as when there is none). An entry another client added with a time-based id
//!   has no offset: receiving it is [`Error::ForeignEntry`], naming its id.
//! - **ack** and **term**: the script reads the message's PEL entry and compares its delivery
//!   count with the receipt's attempt; only if they are equal (and the entry was not nacked)
//!   does it `XACK` and `XDEL` the entry, so a consumer that stalled past its lease can never
//!   settle a message someone else has received since: that is [`Error::Redelivered`].
//! - **nack** and **extend**: the same check, then `XCLAIM … IDLE … JUSTID`, which sets the
//!   entry's idle time without counting a delivery: a nack with delay `d` sets it to
//!   `visibility − d`, so the message is claimable again after `d`; an extension by `b` sets it
//!   to `visibility − b`. A nacked entry is moved to a reserved consumer name
//!   ([`NACKED_CONSUMER`]), so a second settle call with the same attempt is
//!   [`Error::NotLeased`].
//! - **dead letters**: `XRANGE` of the dead-letter stream one entry at a time, at most
//!   [`MAX_DEAD_LETTERS_PER_CALL`] of them, each cut to the fields a dead letter has, with a
//!   payload longer than `max_message_bytes` (or an offset or delivery count longer than any
//!   stream id) replaced by a mark: one call's reply and the server's page are bounded
//!   whatever another client wrote.
//!
//! What differs from the embedded queue (see the crate README for the full list): idle time is
//! the **server's wall clock**, not a [`Clock`](infra_common::Clock); delayed sends are not
//! supported, and a nack delay or an extension can be at most the visibility timeout
//! ([`Error::Unsupported`]); a full queue refuses a send instead of waiting; the dedup window is
//! a time, not a count; every handle of one queue must use the same visibility timeout,
//! `max_deliveries` and `max_message_bytes`, since each receive applies its own; settled messages are deleted from the
//! stream at once (`XDEL`), dead letters are kept until someone deletes them.
//!
//! A receive looks for expired leases first with one `XPENDING … IDLE` command: the server's
//! work grows with the number of messages in flight, the number of commands does not. Only a
//! send or a receive creates the consumer group (and the stream); settle calls and stats on a
//! queue nobody sent to or received from write nothing and treat it as empty.
//!
//! Keys are `{prefix}:{name}` with the name in a hash tag (`mqueue:{orders}`), its dead
//! letters `mqueue:{orders}:dlq` and its dedup keys `mqueue:{orders}:id:<message id>`, laid
//! out for one cluster slot; Redis Cluster itself is not supported (no `MOVED` redirections
//! are followed). The server must run with `maxmemory-policy noeviction` (a handle checks it
//! with `CONFIG GET` before its first call and answers [`Error::Unsupported`] otherwise), and
//! no one may `XGROUP DELCONSUMER` a consumer with pending entries (see the crate README).
//!
//! ```no_run
//! use infra_mqueue::redis::{RedisOptions, RedisQueue};
//! use std::time::Duration;
//!
//! let options = RedisOptions::default().visibility_timeout(Duration::from_secs(30));
//! let queue = RedisQueue::new("redis://127.0.0.1:6379/", "images", options)?;
//! queue.send(b"resize image 17".as_slice())?;
//! if let Some(delivery) = queue.try_receive()? {
//!     // ... resize the image ...
//!     queue.ack(&delivery)?;
//! }
//! # Ok::<(), infra_mqueue::Error>(())
//! ```

#[cfg(feature = "metrics")]
pub mod metrics;

use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use bytes::Bytes;
use infra_common::RandomState;
use infra_common::redis::{Connections, Script};
use infra_common::sync::atomic::{AtomicBool, Ordering};
use redis::{ErrorKind, RedisError, Value};

use crate::error::Error;
use crate::queue::{DeadLetter, Delivery, MAX_DURATION, MAX_ID_LEN, Message, Receipt, Sent};

/// The most dead letters one [`RedisQueue::dead_letters`] call reads: a larger `max` is cut
/// to it, so the page the server builds for one call holds at most this many entries of
/// bounded size (see [`RedisQueue::dead_letters`]).
pub const MAX_DEAD_LETTERS_PER_CALL: usize = 100;

/// The consumer name a nacked message is parked under until it is received again; no
/// consumer may take this name.
pub const NACKED_CONSUMER: &str = "mqueue:nacked";

/// Creates the consumer group (`ARGV[1]`) of the stream `KEYS[1]` if it is missing, reading
/// from the stream's start; the `BUSYGROUP` answer when it exists is ignored.
macro_rules! ensure_group {
    () => {
        "redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n"
    };
}

/// Defines `payload(fields)`, the payload of an entry's fields (`false` when it has none), and
/// `dead_letter(id, deliveries, fields)`, which adds the dead letter of entry `id` of the
/// stream to the dead-letter stream `KEYS[2]`. An entry without a payload (another client's)
/// is dead-lettered without one, so a reader of the dead letters is told, not handed an empty
/// message.
macro_rules! dead_letter {
    () => {
        r"
local function payload(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then return fields[i + 1] end
  end
  return false
end
local function dead_letter(id, deliveries, fields)
  local letter = {'offset', id, 'deliveries', deliveries}
  local p = payload(fields)
  if p then letter[5], letter[6] = 'p', p end
  redis.call('XADD', KEYS[2], '0-*', unpack(letter))
end
"
    };
}

/// Defines what a script needs to find the largest id the queue gave in the stream `KEYS[1]`
/// once an entry with a time-based id hides it: `stream_info()`, the fields of `XINFO STREAM`
/// by name; `largest_queue_seq(info)`, the larger sequence number of the largest deleted id
/// (while that is a `0-N`) and of the largest `0-N` entry; and `keep_largest_deleted(info)`,
/// which makes the largest deleted id that `0-N` again after entries with a time-based id were
/// deleted (their ids, the larger, would take its place and tell nothing). Sequence numbers
/// are decimal strings (`seq_of(id)`, `larger(a, b)`): a Lua number holds none past 2^53
/// exactly.
macro_rules! queue_ids {
    () => {
        r"
local function seq_of(id)
  return type(id) == 'string' and string.match(id, '^0%-(%d+)$') or '0'
end
local function larger(a, b)
  if #a ~= #b then return #a > #b and a or b end
  return a > b and a or b
end
local function stream_info()
  local info = {}
  local reply = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #reply, 2 do info[reply[i]] = reply[i + 1] end
  return info
end
local function largest_queue_seq(info)
  local top = redis.call('XREVRANGE', KEYS[1], '0-18446744073709551615', '-', 'COUNT', 1)[1]
  return larger(seq_of(info['max-deleted-entry-id']), seq_of(top and top[1]))
end
local function keep_largest_deleted(info)
  local seq = largest_queue_seq(info)
  if seq ~= '0' then
    redis.call('XSETID', KEYS[1], info['last-generated-id'], 'MAXDELETEDID', '0-' .. seq)
  end
end
"
    };
}

/// Sends `ARGV[2]` to the stream `KEYS[1]`: `{0, id}` when stored, `{1, id}` when the
/// message id's key `KEYS[3]` names an earlier send (only when the window `ARGV[4]` ms is not
/// 0), `{2}` when the stream holds `ARGV[3]` messages. It creates the group `ARGV[1]` first,
/// so a settle of a sent message that was never received finds it not leased, not unknown.
///
/// Redis gives no id below the stream's last one, so after an entry another client added with
/// a time-based id (`XADD … *`) it refuses every `0-*`. The script then takes the queue's ids
/// back: it dead-letters those entries (to `KEYS[2]`, at most `ARGV[5]` per call: `{3}` when
/// some are left), sets the stream's last id back to the highest `0-N` it may have given
/// (`XSETID`, raising the count of entries added and the largest deleted id to it, so the
/// next time finds it too), and so the group's last-delivered id if it was past them, then
/// stores the message.
const SEND_SCRIPT: &str = concat!(
    ensure_group!(),
    dead_letter!(),
    queue_ids!(),
    r"
-- 'clear' when the stream's last id is one of the queue's, 'more' when entries with a
-- time-based id are left after this call's share, 'done' when the ids are back.
local function take_back_queue_ids()
  local info = stream_info()
  if string.match(info['last-generated-id'], '^0%-') then return 'clear' end
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '1-0', '+', 'COUNT', ARGV[5])) do
    local id = entry[1]
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)[1]
    dead_letter(id, pending and pending[4] or 0, entry[2])
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
  if redis.call('XRANGE', KEYS[1], '1-0', '+', 'COUNT', 1)[1] then
    keep_largest_deleted(info)
    return 'more'
  end
  -- Every id the queue gave is counted in entries-added, unless someone added a larger 0-N by
  -- hand: that one is still in the stream or the largest deleted. Skipping ids is harmless,
  -- giving one twice is not.
  local seq = larger(string.format('%d', info['entries-added']), largest_queue_seq(info))
  local last = '0-' .. seq
  -- Next time, entries-added and the largest deleted id must still cover the ids given up to
  -- here, whatever happened to them: both are raised to the last id (entries-added only up to
  -- 2^63 - 1, the most Redis takes). A largest deleted id left time-based would hide every
  -- later delete of a 0-N.
  local added = larger(seq, '9223372036854775807') == seq and '9223372036854775807' or seq
  redis.call('XSETID', KEYS[1], last, 'ENTRIESADDED', added, 'MAXDELETEDID', last)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
    if fields['name'] == ARGV[1] and not string.match(fields['last-delivered-id'], '^0%-') then
      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last)
    end
  end
  return 'done'
end
local window = ARGV[4]
if window ~= '0' then
  local first = redis.call('GET', KEYS[3])
  if first then return {1, first} end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {2} end
local id = redis.pcall('XADD', KEYS[1], '0-*', 'p', ARGV[2])
if type(id) == 'table' and id.err then
  local taken = take_back_queue_ids()
  if taken == 'clear' then return id end
  if taken == 'more' then return {3} end
  id = redis.call('XADD', KEYS[1], '0-*', 'p', ARGV[2])
end
if window ~= '0' then redis.call('SET', KEYS[3], id, 'PX', window) end
return {0, id}
"
);

/// Leases one message of `KEYS[1]` to consumer `ARGV[2]` of group `ARGV[1]`: first one idle
/// for `ARGV[3]` ms (redelivered; dead-lettered to `KEYS[2]` instead if that would be delivery
/// `ARGV[4] + 1`; at most `ARGV[6]` entries are dead-lettered or dropped), else a new one.
/// `{1, id, deliveries, payload, dead}`, `{3, id, deliveries, length, dead}` when the payload
/// is longer than `ARGV[5]` bytes (only another client can have written it; it stays leased,
/// so the reply never carries more than the limit), or `{0, dead}` when none is ready, where
/// `dead` counts the messages dead-lettered on the way. Deleting an entry with a time-based
/// id keeps the stream's largest deleted id the largest `0-N`, which a send that takes the
/// queue's ids back reads.
const RECEIVE_SCRIPT: &str = concat!(
    ensure_group!(),
    dead_letter!(),
    queue_ids!(),
    r"
local group, consumer, max = ARGV[1], ARGV[2], tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5])
-- Deleting an entry with a time-based id would make its id the stream's largest deleted one,
-- hiding the largest 0-N a send needs if it takes the queue's ids back: that one is kept. The
-- stream's information is read once: nothing this script does changes what it uses.
local info
local function delete(id)
  if string.match(id, '^0%-') then
    redis.call('XDEL', KEYS[1], id)
    return
  end
  info = info or stream_info()
  redis.call('XDEL', KEYS[1], id)
  keep_largest_deleted(info)
end
local function leased(id, deliveries, fields, dead)
  local p = payload(fields)
  if p and #p > max_bytes then return {3, id, deliveries, #p, dead} end
  return {1, id, deliveries, p, dead}
end
local dead = 0
for _ = 1, tonumber(ARGV[6]) do
  local oldest = redis.call('XPENDING', KEYS[1], group, 'IDLE', ARGV[3], '-', '+', 1)[1]
  if not oldest then break end
  local id, deliveries = oldest[1], oldest[4] + 1
  if deliveries <= max then
    -- The script runs at one instant: the entry is still idle enough. Only an entry deleted
    -- from the stream is not claimed; it can never be delivered, so it leaves the PEL.
    local claimed = redis.call('XCLAIM', KEYS[1], group, consumer, 0, id)[1]
    if claimed then return leased(id, deliveries, claimed[2], dead) end
    redis.call('XACK', KEYS[1], group, id)
  else
    local stored = redis.call('XRANGE', KEYS[1], id, id)[1]
    if stored then
      dead_letter(id, deliveries - 1, stored[2])
      dead = dead + 1
    end
    redis.call('XACK', KEYS[1], group, id)
    delete(id)
  end
end
local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if not read then return {0, dead} end
local entry = read[1][2][1]
return leased(entry[1], 1, entry[2], dead)
"
);

/// The most idle entries one receive takes from the pending entries list without delivering
/// one (dead-lettered, or dropped as deleted from the stream). The server answers no one else
/// while a script runs, and each of these entries costs a walk of the list: the rest are left
/// to the next receive.
const SWEEP_LIMIT: u32 = 64;

/// Settles delivery `ARGV[3]` of entry `ARGV[2]` of `KEYS[1]` in group `ARGV[1]` with the
/// action `ARGV[4]` (`ack`: `XACK` and `XDEL`; `nack`: park it under consumer `ARGV[6]` idle
/// for `ARGV[5]` ms; `extend`: set its idle time to `ARGV[5]` ms). `{0}` done, `{1}` already
/// settled, `{2}` never delivered as that attempt, `{3, current}` redelivered since, `{4}`
/// nacked by that attempt.
const SETTLE_SCRIPT: &str = r"
local group, id, attempt, parked = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[6]
local pending = redis.pcall('XPENDING', KEYS[1], group, id, id, 1)
if pending.err then return {2} end
local entry = pending[1]
if not entry then
  if #redis.call('XRANGE', KEYS[1], id, id) == 1 then return {2} end
  local last
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, delivered
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then delivered = info[i + 1] end
    end
    if name == group then last = delivered end
  end
  local a = last and string.match(last, '^0%-(%d+)$')
  local b = string.match(id, '^0%-(%d+)$')
  if a and b and (#b < #a or (#b == #a and b <= a)) then return {1} end
  return {2}
end
local holder, deliveries = entry[2], entry[4]
if attempt == 0 or attempt > deliveries then return {2} end
if deliveries == attempt and holder ~= parked then
  if ARGV[4] == 'ack' then
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
  elseif ARGV[4] == 'nack' then
    redis.call('XCLAIM', KEYS[1], group, parked, 0, id, 'IDLE', ARGV[5], 'JUSTID')
  else
    redis.call('XCLAIM', KEYS[1], group, holder, 0, id, 'IDLE', ARGV[5], 'JUSTID')
  end
  return {0}
end
if attempt < deliveries then return {3, deliveries} end
return {4}
";

/// Up to `ARGV[2]` entries of the dead-letter stream `KEYS[2]` from id `ARGV[1]` on, each as
/// `{id, fields}` with only the fields a dead letter has (`offset`, `deliveries`, `p`; the
/// first of each), so a reply is bounded whatever another client wrote: a payload longer than
/// `ARGV[3]` bytes, or an offset or delivery count longer than `ARGV[4]`, is replaced by the
/// field `oversized` naming it. The entries are read one at a time and only their shortened
/// copies kept, so the page the script builds never holds whole entries.
const DEAD_LETTERS_SCRIPT: &str = r"
local limits = {offset = tonumber(ARGV[4]), deliveries = tonumber(ARGV[4]), p = tonumber(ARGV[3])}
local function shortened(fields)
  local kept, seen = {}, {}
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    local limit = limits[name]
    if limit and not seen[name] then
      seen[name] = true
      local n = #kept
      if #value > limit then
        kept[n + 1], kept[n + 2] = 'oversized', name
      else
        kept[n + 1], kept[n + 2] = name, value
      end
    end
  end
  return kept
end
local page, from = {}, ARGV[1]
for _ = 1, tonumber(ARGV[2]) do
  local entry = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 1)[1]
  if not entry then break end
  page[#page + 1] = {entry[1], shortened(entry[2])}
  from = '(' .. entry[1]
end
return page
";

/// The longest offset or delivery count a dead letter's listing carries: every stream id
/// (`<u64>-<u64>`) fits; a longer one can only be another client's, and is not read.
const MAX_LETTER_FIELD_BYTES: usize = 64;

/// `{unsettled, pending, parked, dead letters}` of `KEYS[1]` (group `ARGV[1]`, parked
/// consumer `ARGV[2]`) and its dead-letter stream `KEYS[2]`.
const STATS_SCRIPT: &str = r"
local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if summary.err then summary = {0} end
local parked = 0
if summary[4] then
  for _, consumer in ipairs(summary[4]) do
    if consumer[1] == ARGV[2] then parked = tonumber(consumer[2]) end
  end
end
return {redis.call('XLEN', KEYS[1]), summary[1], parked, redis.call('XLEN', KEYS[2])}
";

/// How a [`RedisQueue`] behaves. Every handle of one queue should use the same visibility
/// timeout, `max_deliveries` and `max_message_bytes`: each receive applies its own.
///
/// ```
/// use infra_mqueue::redis::RedisOptions;
/// use std::time::Duration;
///
/// let options = RedisOptions::default()
///     .visibility_timeout(Duration::from_secs(60))
///     .max_deliveries(3)
///     .dedup_window(Duration::from_secs(600))
///     .consumer("worker-1");
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct RedisOptions {
    timeout: Duration,
    prefix: String,
    group: String,
    consumer: Option<String>,
    visibility_timeout: Duration,
    max_deliveries: u32,
    capacity: u64,
    max_message_bytes: usize,
    dedup_window: Option<Duration>,
    max_idle_connections: usize,
    #[cfg(feature = "metrics")]
    metrics_name: Option<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            prefix: "mqueue".to_owned(),
            group: "workers".to_owned(),
            consumer: None,
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            capacity: 100_000,
            max_message_bytes: 1 << 20,
            #[cfg(feature = "metrics")]
            metrics_name: None,
            dedup_window: None,
            max_idle_connections: 16,
        }
    }
}

impl RedisOptions {
    /// How long to wait for connecting, sending and each answer (default 2 s; not zero, which
    /// sockets refuse). A call that times out is [`Error::Backend`], with its outcome unknown.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The prefix of every Redis key (default `mqueue`; no `{` or `}`, which would move the
    /// hash tag off the queue name).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The consumer group (default `workers`). Use one group per queue: a settle deletes the
    /// message from the stream, which takes it from every other group too.
    #[must_use]
    pub fn group(self, group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            ..self
        }
    }

    /// This handle's consumer name in the group (default: random per handle). Redis keeps
    /// every consumer name it has seen in the group; a stable name per worker keeps that list
    /// short.
    #[must_use]
    pub fn consumer(self, consumer: impl Into<String>) -> Self {
        Self {
            consumer: Some(consumer.into()),
            ..self
        }
    }

    /// How long a delivery stays leased before a receive may take it again (default 30 s;
    /// 1 ms to [`MAX_DURATION`], whole milliseconds).
    #[must_use]
    pub fn visibility_timeout(self, visibility_timeout: Duration) -> Self {
        Self {
            visibility_timeout,
            ..self
        }
    }

    /// Deliveries after which a message given back (nacked or expired) is dead-lettered
    /// instead of delivered again (default 5; at least 1).
    #[must_use]
    pub fn max_deliveries(self, max_deliveries: u32) -> Self {
        Self {
            max_deliveries,
            ..self
        }
    }

    /// Unsettled messages the stream holds before a send fails with [`Error::Full`] (default
    /// 100,000; at least 1).
    #[must_use]
    pub fn capacity(self, capacity: u64) -> Self {
        Self { capacity, ..self }
    }

    /// The largest payload a send accepts and a receive reads (default 1 MiB). Give every
    /// handle of one queue the same limit: a receive answers a longer stream entry with
    /// [`Error::CorruptMessage`] without reading it.
    #[must_use]
    pub fn max_message_bytes(self, max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            ..self
        }
    }

    /// Deduplicates sends that carry a message id for this long after the first (default:
    /// off; at least 1 ms).
    #[must_use]
    pub fn dedup_window(self, window: Duration) -> Self {
        Self {
            dedup_window: Some(window),
            ..self
        }
    }

    /// Idle connections kept for reuse (default 16).
    #[must_use]
    pub fn max_idle_connections(self, max_idle_connections: usize) -> Self {
        Self {
            max_idle_connections,
            ..self
        }
    }

    /// The `queue` label of this handle's metrics (feature `metrics`; default `default`).
    /// The handle registers its series when it is built: install the recorder first.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_name(self, name: impl Into<String>) -> Self {
        Self {
            metrics_name: Some(name.into()),
            ..self
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| Err(Error::InvalidOptions { reason });
        if self.timeout.is_zero() {
            return invalid("timeout must not be zero");
        }
        if self.visibility_timeout < Duration::from_millis(1)
            || self.visibility_timeout > MAX_DURATION
        {
            return invalid("visibility_timeout must be between 1 ms and one year");
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1");
        }
        if self.capacity == 0 {
            return invalid("capacity must be at least 1");
        }
        if self
            .dedup_window
            .is_some_and(|window| window < Duration::from_millis(1) || window > MAX_DURATION)
        {
            return invalid("dedup_window must be between 1 ms and one year");
        }
        if has_brace(&self.prefix) {
            return Err(Error::InvalidName {
                reason: "the key prefix holds a brace",
            });
        }
        if self.group.is_empty() {
            return Err(Error::InvalidName {
                reason: "the consumer group name is empty",
            });
        }
        if let Some(consumer) = &self.consumer
            && (consumer.is_empty() || consumer == NACKED_CONSUMER)
        {
            return Err(Error::InvalidName {
                reason: "the consumer name is empty or reserved",
            });
        }
        Ok(())
    }
}

/// Counts of one Redis queue, read in one round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Unsettled messages: waiting, leased or nacked (the stream's length).
    pub unsettled: u64,
    /// Leased messages, including expired leases not yet received again.
    pub in_flight: u64,
    /// Nacked messages waiting out their delay or for the next receive.
    pub nacked: u64,
    /// Messages in the dead-letter stream.
    pub dead_letters: u64,
}

/// A work queue in one Redis stream, shared by every process that opens the same name on the
/// same server. See the [module documentation](self) for how each call maps to Redis.
///
/// Every call except [`dead_letters`](Self::dead_letters) answers [`Error::Unsupported`]
/// while the server's `maxmemory-policy` is not `noeviction`, checked until a handle's first
/// successful check.
pub struct RedisQueue {
    connections: Connections,
    /// The stream and its dead letters: `KEYS` of the receive, stats and dead-letters
    /// scripts, and the first two of the send script's.
    keys: [Vec<u8>; 2],
    /// The prefix of the dedup keys, up to the message id.
    dedup_prefix: Vec<u8>,
    consumer: String,
    visibility_ms: u64,
    options: RedisOptions,
    send: Script,
    receive: Script,
    settle: Script,
    stats: Script,
    dead_letters: Script,
    /// Whether the server's eviction policy was found safe (or could not be read).
    policy_checked: AtomicBool,
    #[cfg(feature = "metrics")]
    metrics: metrics::RedisMetrics,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("stream", &String::from_utf8_lossy(&self.keys[0]))
            .field("consumer", &self.consumer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
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

/// Whether `name` holds a `{` or `}`. The keys are `<prefix>:{<name>}…` with the name as the
/// hash tag; a brace in either part would move the tag and could make one queue's stream the
/// same key as another's dead letters or dedup keys.
fn has_brace(name: &str) -> bool {
    name.contains(['{', '}'])
}

/// The stream id of the message at `offset`: `0-(offset + 1)`.
fn stream_id(offset: u64) -> Option<String> {
    offset.checked_add(1).map(|seq| format!("0-{seq}"))
}

/// The offset of the stream id `0-N` (N ≥ 1).
fn offset_of(id: &[u8]) -> Option<u64> {
    let seq = std::str::from_utf8(id).ok()?.strip_prefix("0-")?;
    seq.parse::<u64>().ok()?.checked_sub(1)
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

/// A stream-id field of a reply as an offset; anything else is not one of ours.
fn offset_field(what: &str, reply: &Value, field: Option<&Value>) -> Result<u64, Error> {
    field
        .and_then(bulk)
        .and_then(offset_of)
        .ok_or_else(|| malformed(what, reply))
}

/// The offset of a delivered entry's stream id: an id other than `0-N` is an entry another
/// client added with a time-based id, which has no offset and is named by its id instead.
fn delivered_offset(reply: &Value, field: Option<&Value>) -> Result<u64, Error> {
    let id = field
        .and_then(bulk)
        .ok_or_else(|| malformed("receive", reply))?;
    offset_of(id).ok_or_else(|| Error::ForeignEntry {
        id: String::from_utf8_lossy(id).into_owned(),
        reason: "a stream entry another client added with a time-based id",
    })
}

impl RedisQueue {
    /// The queue `name` on the Redis at `url` (`redis://host:port/db`). No connection is made
    /// until the first call; the consumer group is created by the first receive.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] or [`Error::InvalidName`] for options out of range, an empty
    /// name, or a name or key prefix holding a `{` or `}` (the name is the keys' hash tag);
    /// [`Error::Backend`] for a malformed URL.
    pub fn new(url: &str, name: &str, options: RedisOptions) -> Result<Self, Error> {
        options.validate()?;
        if name.is_empty() || has_brace(name) {
            return Err(Error::InvalidName {
                reason: "the queue name is empty or holds a brace",
            });
        }
        let connections = Connections::open(url, options.timeout, options.max_idle_connections)
            .map_err(|e| backend(&e))?;
        let stream = format!("{}:{{{name}}}", options.prefix);
        let consumer = options.consumer.clone().unwrap_or_else(|| {
            let random = RandomState::new().hash_one(std::process::id());
            format!("consumer-{random:016x}")
        });
        let visibility_ms = u64::try_from(options.visibility_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(Self {
            connections,
            keys: [
                stream.clone().into_bytes(),
                format!("{stream}:dlq").into_bytes(),
            ],
            dedup_prefix: format!("{stream}:id:").into_bytes(),
            consumer,
            visibility_ms,
            // A send run twice may store the message twice; a receive run twice leases two
            // messages, one of which comes back only after its lease; a settle run twice
            // reports its own first run as a refusal. None is resent.
            send: Script::new(SEND_SCRIPT, false),
            receive: Script::new(RECEIVE_SCRIPT, false),
            settle: Script::new(SETTLE_SCRIPT, false),
            // Only reads (a missing group counts as empty): harmless to repeat.
            stats: Script::new(STATS_SCRIPT, true),
            dead_letters: Script::new(DEAD_LETTERS_SCRIPT, true),
            policy_checked: AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            metrics: metrics::RedisMetrics::new(options.metrics_name.as_deref()),
            options,
        })
    }

    /// This handle's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Refuses a server that may evict keys, once per handle until the policy is found safe: an
    /// evicted stream loses its unsettled messages and restarts at offset 0. A server that does
    /// not answer `CONFIG GET` (the command disabled or not permitted) is not checked.
    fn check_eviction_policy(&self) -> Result<(), Error> {
        if self.policy_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let reply = self.connections.run(true, |connection| {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query::<Vec<String>>(connection)
        });
        match reply {
            Ok(pair) if pair.get(1).is_some_and(|policy| policy != "noeviction") => {
                return Err(Error::Unsupported {
                    reason: "the Redis server may evict keys: a queue needs maxmemory-policy noeviction",
                });
            }
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::Server(_)) => {}
            Err(error) => {
                #[cfg(feature = "metrics")]
                self.metrics.backend_errors.increment(1);
                return Err(backend(&error));
            }
        }
        self.policy_checked.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs `script` once the eviction policy is found safe.
    fn run(&self, script: &Script, keys: &[Vec<u8>], args: &[&[u8]]) -> Result<Value, Error> {
        self.check_eviction_policy()?;
        self.script(script, keys, args)
    }

    /// Runs `script`, whatever the eviction policy.
    fn script(&self, script: &Script, keys: &[Vec<u8>], args: &[&[u8]]) -> Result<Value, Error> {
        self.connections.script(script, keys, args).map_err(|e| {
            #[cfg(feature = "metrics")]
            self.metrics.backend_errors.increment(1);
            backend(&e)
        })
    }

    /// Stores a message at the end of the stream; returns once Redis has applied the `XADD`
    /// (durable as far as the server's persistence setting makes it: see the crate README).
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`], [`Error::InvalidMessageId`], [`Error::Unsupported`] for a
    /// message with a delay, [`Error::Full`] when the stream holds `capacity` unsettled
    /// messages (nothing waits: retry later), [`Error::Backend`] when the server fails (the
    /// message may or may not be stored; resend it with an id to be sure it is stored once).
    /// [`Error::Unsupported`] too when more than 64 entries another client added with a
    /// time-based id are in the way of the queue's ids: the call dead-lettered 64 of them and
    /// stored nothing; retry.
    pub fn send(&self, message: impl Into<Message>) -> Result<Sent, Error> {
        let (payload, id, delay) = message.into().into_parts();
        if payload.len() > self.options.max_message_bytes {
            return Err(Error::MessageTooLarge {
                len: payload.len(),
                max: self.options.max_message_bytes,
            });
        }
        if let Some(id) = &id
            && (id.is_empty() || id.len() > MAX_ID_LEN)
        {
            return Err(Error::InvalidMessageId { len: id.len() });
        }
        if !delay.is_zero() {
            return Err(Error::Unsupported {
                reason: "a Redis queue has no delayed sends",
            });
        }
        let (dedup_key, window) = match (&id, self.options.dedup_window) {
            (Some(id), Some(window)) => {
                let mut key = self.dedup_prefix.clone();
                key.extend_from_slice(id);
                (key, window.as_millis().max(1).to_string())
            }
            _ => (self.keys[0].clone(), "0".to_owned()),
        };
        let capacity = self.options.capacity.to_string();
        let sweep = SWEEP_LIMIT.to_string();
        let keys = [self.keys[0].clone(), self.keys[1].clone(), dedup_key];
        let args: [&[u8]; 5] = [
            self.options.group.as_bytes(),
            &payload,
            capacity.as_bytes(),
            window.as_bytes(),
            sweep.as_bytes(),
        ];
        let reply = self.run(&self.send, &keys, &args)?;
        let Value::Array(items) = &reply else {
            return Err(malformed("send", &reply));
        };
        match items.first().and_then(int) {
            Some(code @ (0 | 1)) => {
                let sent = Sent {
                    offset: offset_field("send", &reply, items.get(1))?,
                    duplicate: code == 1,
                };
                #[cfg(feature = "metrics")]
                if sent.duplicate {
                    self.metrics.duplicates.increment(1);
                } else {
                    self.metrics.sends.increment(1);
                }
                Ok(sent)
            }
            Some(2) => Err(Error::Full {
                capacity: usize::try_from(self.options.capacity).unwrap_or(usize::MAX),
            }),
            Some(3) => Err(Error::Unsupported {
                reason: "more than 64 entries another client added with a time-based id are in the way of the queue's ids: each send dead-letters 64 of them, retry",
            }),
            _ => Err(malformed("send", &reply)),
        }
    }

    /// Leases a message, if one is ready, without waiting: first one whose lease ran out (or
    /// whose nack delay is over), else the oldest never delivered. A message that would be
    /// delivered for the `max_deliveries + 1`-th time is moved to the dead-letter stream
    /// instead, in the same call; after 64 such messages (or entries deleted from the stream
    /// behind the queue's back), so that one call cannot hold the server for long, the call
    /// looks no further among them and delivers the oldest message never delivered, if any,
    /// leaving the rest to the next receive.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the server fails (a message it leased then comes back after
    /// the visibility timeout); [`Error::CorruptMessage`] for a stream entry this crate did
    /// not write: one without a payload field, or with a payload longer than
    /// `max_message_bytes` (not read from the server); [`Error::ForeignEntry`], naming the
    /// entry, for one another client added with a time-based id. Such an entry stays leased
    /// like any delivery, comes back after the visibility timeout and is dead-lettered after
    /// `max_deliveries` (one with a time-based id sooner, by the next send: see
    /// [`RedisQueue::send`]). The next receive delivers the next message.
    pub fn try_receive(&self) -> Result<Option<Delivery>, Error> {
        let visibility = self.visibility_ms.to_string();
        let max = self.options.max_deliveries.to_string();
        let max_bytes = self.options.max_message_bytes.to_string();
        let sweep = SWEEP_LIMIT.to_string();
        let args: [&[u8]; 6] = [
            self.options.group.as_bytes(),
            self.consumer.as_bytes(),
            visibility.as_bytes(),
            max.as_bytes(),
            max_bytes.as_bytes(),
            sweep.as_bytes(),
        ];
        let reply = self.run(&self.receive, &self.keys, &args)?;
        let Value::Array(items) = &reply else {
            return Err(malformed("receive", &reply));
        };
        #[cfg(feature = "metrics")]
        {
            let at = if items.first().and_then(int) == Some(0) {
                1
            } else {
                4
            };
            let dead = items
                .get(at)
                .and_then(int)
                .and_then(|n| u64::try_from(n).ok());
            self.metrics.dead_lettered.increment(dead.unwrap_or(0));
        }
        match items.first().and_then(int) {
            Some(0) => Ok(None),
            Some(1) => {
                let offset = delivered_offset(&reply, items.get(1))?;
                let attempt = items
                    .get(2)
                    .and_then(int)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| malformed("receive", &reply))?;
                let payload = items.get(3).and_then(bulk).ok_or(Error::CorruptMessage {
                    offset,
                    reason: "a stream entry without a payload field",
                })?;
                #[cfg(feature = "metrics")]
                {
                    self.metrics.deliveries.increment(1);
                    if attempt > 1 {
                        self.metrics.redeliveries.increment(1);
                    }
                }
                Ok(Some(Delivery::new(
                    offset,
                    attempt,
                    Bytes::copy_from_slice(payload),
                )))
            }
            Some(3) => Err(Error::CorruptMessage {
                offset: delivered_offset(&reply, items.get(1))?,
                reason: "a stream entry longer than max_message_bytes",
            }),
            _ => Err(malformed("receive", &reply)),
        }
    }

    /// One settle call: the receipt is checked against the PEL entry, then `action` applied.
    fn settle_call(&self, receipt: Receipt, action: &str, idle_ms: u64) -> Result<(), Error> {
        let (offset, attempt) = (receipt.offset(), receipt.attempt());
        let Some(id) = stream_id(offset) else {
            return Err(Error::UnknownDelivery { offset, attempt });
        };
        let (attempt_arg, idle) = (attempt.to_string(), idle_ms.to_string());
        let args: [&[u8]; 6] = [
            self.options.group.as_bytes(),
            id.as_bytes(),
            attempt_arg.as_bytes(),
            action.as_bytes(),
            idle.as_bytes(),
            NACKED_CONSUMER.as_bytes(),
        ];
        let reply = self.run(&self.settle, &self.keys[..1], &args)?;
        let Value::Array(items) = &reply else {
            return Err(malformed(action, &reply));
        };
        #[cfg(feature = "metrics")]
        if matches!(items.first().and_then(int), Some(1..=4)) {
            self.metrics.refused.increment(1);
        }
        match items.first().and_then(int) {
            Some(0) => Ok(()),
            Some(1) => Err(Error::AlreadySettled { offset }),
            Some(2) => Err(Error::UnknownDelivery { offset, attempt }),
            Some(3) => {
                let current = items
                    .get(1)
                    .and_then(int)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| malformed(action, &reply))?;
                Err(Error::Redelivered {
                    offset,
                    attempt,
                    current,
                })
            }
            Some(4) => Err(Error::NotLeased { offset, attempt }),
            _ => Err(malformed(action, &reply)),
        }
    }

    /// Acknowledges the delivery: the entry is acknowledged (`XACK`) and deleted from the
    /// stream (`XDEL`), never delivered again.
    ///
    /// # Errors
    ///
    /// Refused, as by the embedded queue, if the message was received again since
    /// ([`Error::Redelivered`]), nacked ([`Error::NotLeased`]), already settled
    /// ([`Error::AlreadySettled`]) or never delivered as this attempt
    /// ([`Error::UnknownDelivery`]). A lease past its deadline still counts until the message
    /// is received again. [`Error::Backend`] when the server fails.
    pub fn ack(&self, receipt: impl Into<Receipt>) -> Result<(), Error> {
        self.settle_call(receipt.into(), "ack", 0)?;
        #[cfg(feature = "metrics")]
        self.metrics.acks.increment(1);
        Ok(())
    }

    /// Terminates the delivery: settled without a dead letter, as by an ack (Redis sees no
    /// difference). Refused like [`RedisQueue::ack`].
    ///
    /// # Errors
    ///
    /// As [`RedisQueue::ack`].
    pub fn term(&self, receipt: impl Into<Receipt>) -> Result<(), Error> {
        self.settle_call(receipt.into(), "ack", 0)
    }

    /// Gives the message back, to be received again after `delay` (zero: at once). It counts
    /// as a delivery: after `max_deliveries` the next receive that reaches it dead-letters it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDuration`] beyond [`MAX_DURATION`]; [`Error::Unsupported`] for a delay
    /// longer than the visibility timeout (Redis cannot make an entry look idle for less than
    /// no time); otherwise refused like [`RedisQueue::ack`].
    pub fn nack(&self, receipt: impl Into<Receipt>, delay: Duration) -> Result<(), Error> {
        let idle = self.idle_for(delay, "a nack delay longer than the visibility timeout")?;
        self.settle_call(receipt.into(), "nack", idle)
    }

    /// Extends the lease to `by` from now.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDuration`] beyond [`MAX_DURATION`]; [`Error::Unsupported`] for an
    /// extension longer than the visibility timeout; otherwise refused like
    /// [`RedisQueue::ack`].
    pub fn extend(&self, receipt: impl Into<Receipt>, by: Duration) -> Result<(), Error> {
        let idle = self.idle_for(by, "an extension longer than the visibility timeout")?;
        self.settle_call(receipt.into(), "extend", idle)
    }

    /// The idle time that makes an entry claimable again `after` from now.
    fn idle_for(&self, after: Duration, too_long: &'static str) -> Result<u64, Error> {
        if after > MAX_DURATION {
            return Err(Error::InvalidDuration { duration: after });
        }
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.visibility_ms
            .checked_sub(after_ms)
            .ok_or(Error::Unsupported { reason: too_long })
    }

    /// Dead letters from `position` on, at most `max` and at most
    /// [`MAX_DEAD_LETTERS_PER_CALL`] (a larger `max` is cut to it: read on from the last
    /// position + 1), oldest first. They stay in the dead-letter stream until someone deletes
    /// them (`XDEL` or `XTRIM` on `<queue key>:dlq`).
    ///
    /// Whatever another client wrote to the dead-letter stream, one call's reply, and the page
    /// the server builds for it, hold at most `MAX_DEAD_LETTERS_PER_CALL` entries of at most
    /// `max_message_bytes` of payload and a few short fields each: fields a dead letter does
    /// not have are left out, and a longer payload, offset or delivery count is not read.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the server fails; [`Error::CorruptMessage`] for an entry this
    /// crate did not write, with its position as the offset (read on from the next one to
    /// step over it): among them the dead letter of a message another client wrote without a
    /// payload, or with a payload longer than `max_message_bytes` or an offset or delivery
    /// count longer than any the queue writes, which are not read from the server (the dead
    /// letter keeps them), or the dead letter of an entry another client added to the queue's
    /// stream with a time-based id; [`Error::ForeignEntry`] for an entry added to the
    /// dead-letter stream itself with a time-based id (it has no position).
    pub fn dead_letters(&self, position: u64, max: usize) -> Result<Vec<DeadLetter>, Error> {
        let (Some(start), false) = (stream_id(position), max == 0) else {
            return Ok(Vec::new());
        };
        let count = max.min(MAX_DEAD_LETTERS_PER_CALL).to_string();
        let max_bytes = self.options.max_message_bytes.to_string();
        let max_field = MAX_LETTER_FIELD_BYTES.to_string();
        let args: [&[u8]; 4] = [
            start.as_bytes(),
            count.as_bytes(),
            max_bytes.as_bytes(),
            max_field.as_bytes(),
        ];
        // Not `run`: reading the dead letters is safe under any eviction policy.
        let reply = self.script(&self.dead_letters, &self.keys, &args)?;
        let Value::Array(entries) = &reply else {
            return Err(malformed("dead letters", &reply));
        };
        entries.iter().map(dead_letter).collect()
    }

    /// The queue's counts, read together in one round trip.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the server fails.
    pub fn stats(&self) -> Result<RedisStats, Error> {
        let args: [&[u8]; 2] = [self.options.group.as_bytes(), NACKED_CONSUMER.as_bytes()];
        let reply = self.run(&self.stats, &self.keys, &args)?;
        let counts: Option<Vec<u64>> = match &reply {
            Value::Array(items) => items
                .iter()
                .map(|item| int(item).and_then(|n| u64::try_from(n).ok()))
                .collect(),
            _ => None,
        };
        match counts.as_deref() {
            Some(&[unsettled, pending, nacked, dead_letters]) => Ok(RedisStats {
                unsettled,
                in_flight: pending.saturating_sub(nacked),
                nacked,
                dead_letters,
            }),
            _ => Err(malformed("stats", &reply)),
        }
    }
}

/// One entry of the dead-letter listing, `{id, fields}`. A malformed one is reported at its
/// position, so a reader can step over it; one whose own id is time-based has no position and
/// is named by its id.
fn dead_letter(entry: &Value) -> Result<DeadLetter, Error> {
    let unreadable = |reason| Error::CorruptMessage { offset: 0, reason };
    let Value::Array(parts) = entry else {
        return Err(unreadable("a dead letter that is not a stream entry"));
    };
    let id = parts
        .first()
        .and_then(bulk)
        .ok_or(unreadable("a dead letter without a stream id"))?;
    let position = offset_of(id).ok_or_else(|| Error::ForeignEntry {
        id: String::from_utf8_lossy(id).into_owned(),
        reason: "a dead letter another client added with a time-based id",
    })?;
    let corrupt = |reason| Error::CorruptMessage {
        offset: position,
        reason,
    };
    let Some(Value::Array(fields)) = parts.get(1) else {
        return Err(corrupt("a dead letter without fields"));
    };
    let field = |name: &[u8]| {
        fields
            .chunks_exact(2)
            .find(|pair| bulk(&pair[0]) == Some(name))
            .map(|pair| &pair[1])
    };
    if let Some(name) = field(b"oversized") {
        return Err(corrupt(if bulk(name) == Some(b"p") {
            "a dead letter longer than max_message_bytes (not read from the server)"
        } else {
            "a dead letter whose offset or delivery count is longer than any the queue writes (not read from the server)"
        }));
    }
    let offset = field(b"offset")
        .and_then(bulk)
        .ok_or(corrupt("a dead letter without its offset"))?;
    let offset = offset_of(offset).ok_or(corrupt(
        "the dead letter of an entry another client added with a time-based id (its offset is that id)",
    ))?;
    let deliveries = field(b"deliveries")
        .and_then(int)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(corrupt("a dead letter without its delivery count"))?;
    let payload = field(b"p")
        .and_then(bulk)
        .ok_or(corrupt("a dead letter without its payload"))?;
    Ok(DeadLetter {
        position,
        offset,
        deliveries,
        payload: Bytes::copy_from_slice(payload),
    })
}
