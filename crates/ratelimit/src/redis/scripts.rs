//! The two Lua scripts, the arguments a quota becomes, and the reply they give.

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

/// GCRA on the server: one string per key holding the theoretical arrival time in µs.
///
/// Both scripts take the same arguments and give the same reply, so one code path runs either
/// (and an operator can audit or `SCRIPT LOAD` them):
///
/// - `KEYS`: the state (GCRA: a string; log: the sorted set of admitted cells scored by
///   admission time, then the counter naming its members), and last the record of this request.
/// - `ARGV`: the emission interval (GCRA) or window (log) in microseconds; the tolerance (GCRA,
///   burst × interval) or limit (log); `n`, the cells the request needs; `want`, the cells to
///   take if that many are free (`n` without batching, the batch size with it); the time in
///   microseconds since the Unix epoch, or an empty string for the server's `TIME`; how long to
///   remember the request's record, in milliseconds; how many milliseconds to add to every
///   state's TTL (the clock skew allowed with client time, whose durations the server measures
///   on its own clock).
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
/// effects only). Numbers stay below 2^53 microseconds, which Lua's doubles hold exactly, and reach
/// Redis as integers.
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
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = tonumber(stored)
  if not tat then return redis.error_reply('ERR ' .. KEYS[1] .. ' holds no rate-limit state') end
  if tat < now then tat = now end
end
local owed = tat - now
-- Whole cells in `span` microseconds, exactly (a double quotient may round up to an integer).
local function cells(span)
  if span < 0 then return 0 end
  local whole = math.floor(span / interval)
  if whole * interval > span then whole = whole - 1 end
  if (whole + 1) * interval <= span then whole = whole + 1 end
  return whole
end
local function blocked(debt) return math.max(0, debt + interval - tolerance) end
local free = cells(tolerance - owed)
if n > free then
  return {0, 0, free, owed + n * interval - tolerance, owed, blocked(owed)}
end
local take = math.min(want, free)
if take > 0 then
  owed = owed + take * interval
  redis.call('SET', KEYS[1], now + owed, 'PX', math.ceil(owed / 1000) + tonumber(ARGV[7]))
end
local reply = {1, take, free - take, 0, owed, blocked(owed)}
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

/// A quota in the script's units: the first two arguments, and the most cells one check may
/// ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScriptQuota {
    pub(crate) first: u64,
    pub(crate) second: u64,
    pub(crate) capacity: u32,
}

impl ScriptQuota {
    /// `quota` in microseconds. GCRA's emission interval is rounded **up** to whole
    /// microseconds, so Redis never admits faster than the quota (600,000 per second, an
    /// interval of 1.67 µs, runs at one per 2 µs); an interval under one microsecond cannot be
    /// represented and is [`Error::RateTooHigh`]. The log's window is rounded up too, and its
    /// limit is at most [`RemoteAlgorithm::MAX_LOG_LIMIT`] ([`Error::TooLarge`]).
    pub(crate) fn new(algorithm: RemoteAlgorithm, quota: &Quota) -> Result<Self, Error> {
        let period = u128::from(quota.period_nanos());
        let to_u64 = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
        match algorithm {
            RemoteAlgorithm::Gcra => {
                let limit = u128::from(quota.limit());
                if period < limit * 1_000 {
                    return Err(Error::RateTooHigh {
                        limit: u64::from(quota.limit()),
                        period: quota.period(),
                    });
                }
                // Periods are at most 2^60 ns and bursts make at most 2^61 ns: both fit.
                let interval = to_u64(period.div_ceil(limit * 1_000));
                Ok(Self {
                    first: interval,
                    second: interval.saturating_mul(u64::from(quota.burst())),
                    capacity: quota.burst(),
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
            }),
        }
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
    fn gcra_intervals_round_up_to_whole_microseconds() {
        let cases = [
            // (limit per second, interval µs): never faster than asked.
            (1, 1_000_000),
            (3, 333_334),
            (600_000, 2),
            (1_000_000, 1),
        ];
        for (limit, interval) in cases {
            let quota = Quota::per_second(limit).unwrap().with_burst(4).unwrap();
            let script = ScriptQuota::new(RemoteAlgorithm::Gcra, &quota).unwrap();
            assert_eq!(script.first, interval, "{limit}/s");
            assert_eq!(script.second, 4 * interval, "{limit}/s");
            assert!(u128::from(script.first) * 1_000 * u128::from(limit) >= 1_000_000_000);
        }
        // Slower than asked by less than the rate's share of a million per second.
        for limit in 1..=1_000_000u32 {
            let quota = Quota::per_second(limit.into()).unwrap();
            let interval = ScriptQuota::new(RemoteAlgorithm::Gcra, &quota)
                .unwrap()
                .first;
            let runs_at = 1e6 / interval as f64;
            let asked = f64::from(limit);
            assert!(
                runs_at <= asked && runs_at > asked * (1.0 - asked / 1e6),
                "{limit}/s"
            );
        }
        let too_fast = Quota::per_second(2_000_000).unwrap();
        assert!(matches!(
            ScriptQuota::new(RemoteAlgorithm::Gcra, &too_fast),
            Err(Error::RateTooHigh { .. })
        ));
        let window = Quota::new(5, Duration::from_nanos(1_500)).unwrap();
        let log = ScriptQuota::new(RemoteAlgorithm::SlidingWindowLog, &window).unwrap();
        assert_eq!((log.first, log.second, log.capacity), (2, 5, 5));
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
