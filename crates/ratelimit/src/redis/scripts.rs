//! The two Lua scripts, the arguments a quota becomes, and the reply they give.

use std::time::Duration;

use redis::Value;

use super::options::RemoteAlgorithm;
use crate::{Error, Quota};

/// What both scripts do first: answer a request seen before from its record (the last key),
/// and read the time (the client's, or the server's `TIME`).
macro_rules! script_start {
    () => {
        r"
if redis.replicate_commands then redis.replicate_commands() end
local record = KEYS[#KEYS]
local record_ttl = tonumber(ARGV[6])
local seen = redis.call('GET', record)
if seen then
  local reply = {}
  for field in string.gmatch(seen, '%d+') do reply[#reply + 1] = tonumber(field) end
  return reply
end
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"
    };
}

/// GCRA on the server: one string per key holding the theoretical arrival time, as
/// `microseconds:nanoseconds` since the Unix epoch (a string of whole microseconds, as earlier
/// versions wrote it, reads as such).
///
/// Both scripts take the same arguments and give the same reply, so one code path runs either
/// (and an operator can audit or `SCRIPT LOAD` them):
///
/// - `KEYS`: the state (GCRA: a string; log: the sorted set of admitted cells scored by
///   admission time, then the counter naming its members), and last the record of this request.
/// - `ARGV`: the emission interval (GCRA) or window (log); the tolerance (GCRA, burst ×
///   interval) or limit (log); `n`, the cells the request needs; `want`, the cells to take if
///   that many are free (`n` without batching, the batch size with it); the time in
///   microseconds since the Unix epoch, or an empty string for the server's `TIME`; how long to
///   remember the request's record, in milliseconds; how many milliseconds to add to every
///   state's TTL (the clock skew allowed with client time, whose durations the server measures
///   on its own clock); and how many of the interval's units make a microsecond: GCRA's are
///   nanoseconds (1,000), or microseconds (1) for a quota whose tolerance in nanoseconds
///   would reach 2^53; the log's are microseconds.
/// - Reply: `{allowed, granted, remaining, retry µs, reset µs, blocked µs}`: `granted` cells
///   were taken (between `n` and `want`), `remaining` are still free, `retry` is when `n` cells
///   will be (0 if allowed), `reset` is when the state is full again, `blocked` is how long not
///   even one cell is free.
///
/// **Retries never count twice.** An admitted request leaves its reply under its record key
/// for the given time; the same request sent again (after its reply was lost with its
/// connection) finds the record and gets the first reply back without taking cells again.
/// Denials consume nothing and are not recorded.
///
/// **Redis 6 and 7.** The scripts use only `TIME`, `GET`, `SET … PX`, `INCRBY`, `PEXPIRE`,
/// `ZADD`, `ZCARD`, `ZCOUNT`, `ZRANGE … WITHSCORES` and `ZREMRANGEBYSCORE`, all in Redis 2.6
/// and later, and call `redis.replicate_commands()` where it exists (Redis 3.2 to 6 may be set
/// to replicate scripts verbatim, which forbids writing after `TIME`; Redis 7 replicates
/// effects only). Every number a decision rests on stays below 2^53, which Lua's doubles hold
/// exactly (times since the epoch in microseconds; intervals and what a key owes in the
/// interval's units), and reaches Redis as an integer.
///
/// **Memory.** Every write sets a TTL no longer than what it describes (plus the given skew):
/// a GCRA key lives until its state is full again (at most `burst × interval`), a log and its
/// counter one window after their newest cell, a record for the time given. A denial writes nothing, and an admission's
/// first write is one Redis refuses when out of memory (`maxmemory` with `noeviction`): a
/// script that has written once is let through to the end, so a first write Redis does not
/// check (trimming the log, say) would let it grow past the limit.
pub const GCRA_SCRIPT: &str = concat!(
    script_start!(),
    r"local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local per_us = tonumber(ARGV[8])
-- floor(amount / unit) exactly, for whole numbers below 2^53 (a double quotient may round
-- up to a whole number).
local function whole(amount, unit)
  local q = math.floor(amount / unit)
  if q * unit > amount then q = q - 1 end
  if (q + 1) * unit <= amount then q = q + 1 end
  return q
end
-- What the key owes: its theoretical arrival time less now, in the interval's units, at
-- least 0. Nanoseconds short of a microsecond count as a whole one in microsecond units.
local owed = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local us, ns = string.match(stored, '^(%d+):(%d%d?%d?)$')
  if not us then us, ns = string.match(stored, '^%d+$'), '0' end
  if not us then return redis.error_reply('ERR ' .. KEYS[1] .. ' holds no rate-limit state') end
  us, ns = tonumber(us), tonumber(ns)
  if us >= now then owed = (us - now) * per_us + whole(ns * per_us + 999, 1000) end
end
local function cells(span)
  if span < 0 then return 0 end
  return whole(span, interval)
end
local function blocked(debt) return math.max(0, debt + interval - tolerance) end
-- A duration in the interval's units, in whole microseconds rounded up.
local function in_us(amount) return whole(amount + per_us - 1, per_us) end
local free = cells(tolerance - owed)
if n > free then
  return {0, 0, free, in_us(owed + n * interval - tolerance), in_us(owed), in_us(blocked(owed))}
end
local take = math.min(want, free)
if take > 0 then
  owed = owed + take * interval
  local later = whole(owed, per_us)
  local ns = (owed - later * per_us) * (1000 / per_us)
  redis.call('SET', KEYS[1], string.format('%.0f:%.0f', now + later, ns),
    'PX', whole(owed + per_us * 1000 - 1, per_us * 1000) + tonumber(ARGV[7]))
end
local reply = {1, take, free - take, 0, in_us(owed), in_us(blocked(owed))}
if take > 0 then
  redis.call('SET', record, string.format('%d,%d,%d,%d,%d,%d', unpack(reply)), 'PX', record_ttl)
end
return reply
",
);

/// The sliding-window log on the server: one sorted-set member per admitted cell, scored by
/// its admission time in µs, named by a per-key counter. Arguments and reply as
/// [`GCRA_SCRIPT`].
pub const SLIDING_WINDOW_LOG_SCRIPT: &str = concat!(
    script_start!(),
    r"local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
-- Cells that left the window are counted out here and removed only when writing, so a denial
-- writes nothing and an admission's first write is the one Redis may refuse when out of memory.
local stale = redis.call('ZCOUNT', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1]) - stale
-- Microseconds until the cell of this rank among those in the window (0 = oldest, -1 =
-- newest) leaves it.
local function expiry(rank)
  if rank >= 0 then rank = rank + stale end
  local entry = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.max(0, tonumber(entry[2]) + window - now)
end
local function blocked(held)
  if held >= limit then return expiry(held - limit) end
  return 0
end
local free = math.max(0, limit - count)
if n > free then
  return {0, 0, free, expiry(count + n - limit - 1), expiry(-1), blocked(count)}
end
local take = math.min(want, free)
if take > 0 then
  local last = redis.call('INCRBY', KEYS[2], take)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  stale = 0
  -- All cells in one ZADD, in chunks of 1,000: Lua's unpack takes a few thousand values.
  for first = last - take + 1, last, 1000 do
    local members = {}
    for member = first, math.min(last, first + 999) do
      members[#members + 1] = now
      members[#members + 1] = member
    end
    redis.call('ZADD', KEYS[1], unpack(members))
  end
  local ttl = math.ceil(window / 1000) + tonumber(ARGV[7])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  count = count + take
end
local reply = {1, take, free - take, 0, expiry(-1), blocked(count)}
if take > 0 then
  redis.call('SET', record, string.format('%d,%d,%d,%d,%d,%d', unpack(reply)), 'PX', record_ttl)
end
return reply
",
);

/// A script and its SHA-1, for `EVALSHA`.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) source: &'static str,
    pub(crate) hash: String,
}

impl Script {
    pub(crate) fn of(algorithm: RemoteAlgorithm) -> Self {
        let source = match algorithm {
            RemoteAlgorithm::Gcra => GCRA_SCRIPT,
            RemoteAlgorithm::SlidingWindowLog => SLIDING_WINDOW_LOG_SCRIPT,
        };
        Self {
            source,
            hash: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// A quota in the script's units: the first two arguments, the most cells one check may ask
/// for, and how many of the units make a microsecond (the last argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScriptQuota {
    pub(crate) first: u64,
    pub(crate) second: u64,
    pub(crate) capacity: u32,
    /// 1,000 (nanoseconds) or 1 (microseconds); beside `capacity`, in what would be padding.
    pub(crate) per_micro: u32,
}

/// GCRA's tolerance in nanoseconds stays below this, which Lua's doubles hold exactly, or the
/// quota runs in microseconds.
const EXACT_IN_LUA: u128 = 1 << 53;

impl ScriptQuota {
    /// `quota` in the script's units. GCRA's emission interval is rounded **up** to whole
    /// nanoseconds, so Redis never admits faster than the quota, and slower by at most a
    /// nanosecond per interval (1,000,000 per second runs exactly; 999,999 at one per 1,001 ns);
    /// a quota whose tolerance (burst × interval) reaches 2^53 ns, about 104 days, runs in
    /// microseconds instead (its interval is then at least 2 ms, so a microsecond is at most
    /// 0.05 % of it). The log's window is in microseconds, rounded up, and its limit is at most
    /// [`RemoteAlgorithm::MAX_LOG_LIMIT`] ([`Error::TooLarge`]).
    pub(crate) fn new(algorithm: RemoteAlgorithm, quota: &Quota) -> Result<Self, Error> {
        let period = u128::from(quota.period_nanos());
        let to_u64 = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
        match algorithm {
            RemoteAlgorithm::Gcra => {
                let limit = u128::from(quota.limit());
                let burst = u128::from(quota.burst());
                // At least one nanosecond: a quota is never faster. Periods are at most 2^60 ns
                // and bursts below 2^32: products fit in u128.
                let nanos = period.div_ceil(limit);
                let (interval, per_micro) = if nanos * burst < EXACT_IN_LUA {
                    (nanos, 1_000)
                } else {
                    (period.div_ceil(limit * 1_000), 1)
                };
                Ok(Self {
                    first: to_u64(interval),
                    second: to_u64(interval * burst),
                    capacity: quota.burst(),
                    per_micro,
                })
            }
            RemoteAlgorithm::SlidingWindowLog if quota.limit() > RemoteAlgorithm::MAX_LOG_LIMIT => {
                Err(Error::TooLarge {
                    what: "sliding-window log limit in Redis (cells)",
                    value: u128::from(quota.limit()),
                    max: u128::from(RemoteAlgorithm::MAX_LOG_LIMIT),
                })
            }
            RemoteAlgorithm::SlidingWindowLog => Ok(Self {
                first: to_u64(period.div_ceil(1_000)),
                second: u64::from(quota.limit()),
                capacity: quota.limit(),
                per_micro: 1,
            }),
        }
    }

    /// `amount` of the script's units as a duration.
    pub(crate) fn duration(&self, amount: u64) -> Duration {
        Duration::from_nanos(amount.saturating_mul(1_000 / u64::from(self.per_micro)))
    }
}

/// The script's reply, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) allowed: bool,
    pub(crate) granted: u32,
    pub(crate) remaining: u32,
    pub(crate) retry_micros: u64,
    pub(crate) reset_micros: u64,
    pub(crate) blocked_micros: u64,
}

impl Reply {
    /// Reads a reply; `None` if it is not six non-negative integers with sensible flags.
    pub(crate) fn parse(value: &Value) -> Option<Self> {
        let Value::Array(fields) = value else {
            return None;
        };
        let numbers: Vec<u64> = fields
            .iter()
            .map(|field| match field {
                Value::Int(number) => u64::try_from(*number).ok(),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let &[allowed, granted, remaining, retry, reset, blocked] = numbers.as_slice() else {
            return None;
        };
        Some(Self {
            allowed: match allowed {
                0 => false,
                1 => true,
                _ => return None,
            },
            granted: u32::try_from(granted).ok()?,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            retry_micros: retry,
            reset_micros: reset,
            blocked_micros: blocked,
        })
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn gcra_intervals_round_up_to_whole_nanoseconds() {
        let cases = [
            // (limit per second, interval ns): never faster than asked.
            (1, 1_000_000_000),
            (3, 333_333_334),
            (600_000, 1_667),
            (999_999, 1_001),
            (1_000_000, 1_000),
            (1_000_000_000, 1),
        ];
        for (limit, interval) in cases {
            let quota = Quota::per_second(limit).unwrap().with_burst(4).unwrap();
            let script = ScriptQuota::new(RemoteAlgorithm::Gcra, &quota).unwrap();
            assert_eq!(
                (script.first, script.second, script.per_micro),
                (interval, 4 * interval, 1_000),
                "{limit}/s"
            );
            assert_eq!(
                script.duration(script.first),
                Duration::from_nanos(interval)
            );
        }
        // Slower than asked by at most a nanosecond per interval.
        for limit in 1..=1_000_000u32 {
            let quota = Quota::per_second(limit.into()).unwrap();
            let interval = ScriptQuota::new(RemoteAlgorithm::Gcra, &quota)
                .unwrap()
                .first;
            let runs_at = 1e9 / interval as f64;
            let asked = f64::from(limit);
            assert!(
                runs_at <= asked && runs_at > asked * (1.0 - asked / 1e9),
                "{limit}/s"
            );
        }
        let window = Quota::new(5, Duration::from_nanos(1_500)).unwrap();
        let log = ScriptQuota::new(RemoteAlgorithm::SlidingWindowLog, &window).unwrap();
        assert_eq!(
            (log.first, log.second, log.capacity, log.per_micro),
            (2, 5, 5, 1)
        );
    }

    /// A tolerance that would reach 2^53 ns runs in whole microseconds, rounded up.
    #[test]
    fn a_gcra_tolerance_of_2_to_the_53_nanoseconds_runs_in_microseconds() {
        // One per 2,097,152 ns (2^21): a burst of 2^32 - 1 stays below 2^53 ns, in ns.
        let just_below = Quota::new(1, Duration::from_nanos(1 << 21))
            .unwrap()
            .with_burst(u64::from(u32::MAX))
            .unwrap();
        let script = ScriptQuota::new(RemoteAlgorithm::Gcra, &just_below).unwrap();
        assert_eq!((script.first, script.per_micro), (1 << 21, 1_000));
        assert!(u128::from(script.second) < 1 << 53);
        // One more nanosecond per interval reaches it: microseconds, rounded up.
        let at = Quota::new(1, Duration::from_nanos((1 << 21) + 1))
            .unwrap()
            .with_burst(u64::from(u32::MAX))
            .unwrap();
        let script = ScriptQuota::new(RemoteAlgorithm::Gcra, &at).unwrap();
        assert_eq!((script.first, script.per_micro), (2_098, 1));
        assert_eq!(script.second, 2_098 * u64::from(u32::MAX));
        assert_eq!(script.duration(script.first), Duration::from_micros(2_098));
    }

    #[test]
    fn replies_of_another_shape_are_refused() {
        let reply = |fields: &[i64]| Value::Array(fields.iter().map(|&f| Value::Int(f)).collect());
        assert_eq!(
            Reply::parse(&reply(&[1, 2, 3, 0, 5, 6])),
            Some(Reply {
                allowed: true,
                granted: 2,
                remaining: 3,
                retry_micros: 0,
                reset_micros: 5,
                blocked_micros: 6,
            })
        );
        for bad in [&[1, 2, 3][..], &[2, 0, 0, 0, 0, 0], &[1, -1, 0, 0, 0, 0]] {
            assert_eq!(Reply::parse(&reply(bad)), None, "{bad:?}");
        }
        assert_eq!(Reply::parse(&Value::Nil), None);
    }
}
