//! The driver index shared by many matcher processes through one Redis: positions in a GEO
//! set, states and versions in a hash, last reports in a sorted set; every call is one round
//! trip (one Lua script, or one `HLEN` for [`RedisIndex::len`]) but a query that has to read
//! the whole fleet (one per page of [`SCAN_PAGE`] drivers), and claims are atomic on the
//! server.
//!
//! [`RedisIndex`] has the methods of [`Index`](crate::Index), with the same arguments,
//! results and errors, so code moves between them (or is written once against
//! [`Drivers`]).
//!
//! # Keys
//!
//! Under a prefix (default `geomatch:{drivers}`), seven keys:
//!
//! - `{prefix}:geo`: the GEO set (a sorted set of 52-bit geohashes) of every driver;
//! - `{prefix}:seen`: a sorted set of each driver's last report, in microseconds since
//!   1970 on the **server's** clock (`TIME`), by which [`RedisIndex::remove_idle`] finds
//!   the drivers that stopped reporting without reading the fleet;
//! - `{prefix}:drivers`: a hash of each driver's reported position, exactly as given, and
//!   profile (`"lat lng class capacity"`);
//! - `{prefix}:words`: a hash of each driver's state word, `version × 4 + state`, the same
//!   word as the in-process index's, changed by `HINCRBY` (exact 64-bit arithmetic), or set
//!   by a claim to the server's time (see [Failures](#failures));
//! - `{prefix}:versions`: the index's version counter, a word. An insert takes the next
//!   version from it, and a removal first raises it to the removed driver's version, so a
//!   driver removed and inserted again starts above every version it had: a claim from its
//!   earlier stay never holds on the new one (test
//!   `a_claim_from_before_a_remove_and_insert_does_not_hold`). A restore keeps the version of
//!   its record if it is above the counter, and otherwise takes the counter's next version
//!   with the record's state, as the in-process index raises a restored version to its
//!   floor (test `restoring_an_older_record_does_not_revive_an_old_claim`);
//! - `{prefix}:requests`: a hash of the recent state sets and removals, field `"driver
//!   nonce"` (the driver's id and the request's nonce), value the word the set left or the
//!   record the removal took, so a state set or removal sent again after its answer was lost
//!   finds its own first run, whatever ran in between (see [Failures](#failures));
//! - `{prefix}:request-expiry`: a sorted set of the same fields, each scored with the time
//!   (µs on the server's clock) after which its request can no longer be sent again: its
//!   index's timeout four times over (sending, the answer, connecting again, sending again)
//!   plus [`REQUEST_MEMORY_MARGIN`]. Each state set and removal forgets up to two expired
//!   requests, so the two keys hold about the state sets and removals of that last stretch
//!   of time, not one entry per driver (test `forgotten_state_sets_leave_the_request_keys`).
//!
//! Member and field names are the driver ids in decimal (in the two request keys, the id
//! and the nonce). An index talks to a single Redis
//! server, the one its URL names (a fleet may use one server per URL, with an index for
//! each); Redis Cluster is not supported: the client does not follow `MOVED` redirections.
//! One index per prefix; a fleet split by city uses one prefix per city, and each index
//! refuses the claims of the others ([`Error::ForeignClaim`], test
//! `a_claim_of_one_prefix_is_foreign_to_another`). A claim names its index by the prefix
//! alone, not the server (so every process on the prefix settles it, however it spells the
//! URL): indexes on two servers under the same prefix take each other's claims, so a fleet
//! with a server per region gives each region's index its own prefix too (test
//! `a_claim_names_its_prefix_not_its_server`).
//!
//! # Queries
//!
//! A query is one script. `GEOSEARCH ... BYRADIUS r ASC COUNT n WITHDIST` lists the nearest
//! drivers around the point by Redis's distance; the script keeps those that are available,
//! fresh and pass the filter (one `HGET` of the word, one `ZSCORE`, one `HGET` of the profile
//! per driver, each driver looked at once per query). For [`RedisIndex::nearest`] it starts
//! at [`RedisOptions::search_radius`] and `n = max(4k, 32)`, and widens — four times the
//! radius while every driver in the radius was listed, four times `n` while the list was cut
//! off — until it holds the `k` nearest that pass **and** every driver within
//! [`GEO_MARGIN_M`] of the `k`-th (by Redis's distance). It gives up, and the client reads
//! the whole fleet instead, [`SCAN_PAGE`] (1,000) drivers per script with `HSCAN`, when the
//! search would go past [`MAX_SEARCH_M`] (1,000 km) or, near a pole, come within 0.1° of it
//! (see below why), or examine more than
//! [`SCAN_PAGE`] drivers in the one script: a filter that nobody near passes, or everyone
//! near busy, then costs pages of the fleet, never the whole city in one script (test
//! `a_nearest_query_with_nothing_near_examines_a_bounded_number_of_drivers_per_script`).
//! [`RedisIndex::within`] is the same search for its `limit` nearest, widening no further than
//! its radius (fewer than `limit` inside a radius the search reaches is its answer), and
//! pages the same way (tests
//! `a_radius_query_over_a_city_examines_a_bounded_number_of_drivers_per_script`,
//! `a_radius_query_with_a_small_limit_in_a_busy_city_does_not_read_the_fleet`,
//! `a_continent_wide_radius_with_a_small_limit_does_not_read_the_fleet`). Redis
//! runs one script at a time, so reading the fleet holds the server for one page at a time:
//! other matchers' calls run between the pages (test
//! `a_query_over_the_whole_fleet_reads_it_page_by_page`). The pages are not one snapshot: a
//! driver available throughout the scan is found, one that changes, arrives or leaves during
//! it may or may not be. So a query's cost grows with the drivers it has to skip: busy or
//! filtered-out drivers near the point make it look farther, as in the in-process index, and
//! a query that has to skip more than [`SCAN_PAGE`] of them reads the whole fleet, in pages.
//! `GEOSEARCH` itself (inside Redis, before any driver is examined) reads every driver
//! within its radius to sort them, so a radius that jumps from an empty suburb to a whole
//! city still reads the city's positions (not their states or records) in one script: keep
//! fleets that query across continents in an index per region.
//!
//! The client then computes each survivor's distance from its exact reported position on the
//! crate's sphere ([`EARTH_RADIUS_M`]), sorts by it (ties by id) and keeps `k`. So the
//! answers, drivers and distances, are **the same as the in-process index's** for the same
//! drivers, states and staleness (versions are each index's own): Redis's own distances are
//! used only to choose candidates, with a margin that covers how they differ from ours. One
//! exception: within an arc of about 174° the in-process index picks its `k` by squared
//! chords, and this index by the distances results report, then id. Between drivers as near
//! as each other to within a rounding of their squared chords (nanometers), or exactly as
//! near, the last place can hold another driver on the in-process index (test
//! `of_two_drivers_as_near_to_a_rounding_the_nearer_then_the_smaller_id_is_first`). Beyond
//! it, toward the query point's antipode, where squared chords resolve only tenths of a meter,
//! both go by the distances results report (test
//! `near_the_antipode_the_k_th_place_goes_by_exact_distance`).
//!
//! # How Redis GEO differs, and what this index does about it
//!
//! - Redis measures with the haversine on a sphere of radius 6,372,797.560856 m (ours:
//!   6,371,008.8 m, so its distances are 0.028 % longer) between the query point and the
//!   **center of the driver's geohash cell** (52 bits: 26 per axis, cells of at most 0.6 m by
//!   0.3 m), and prints them to 0.1 mm. Its distance to a driver differs from ours, scaled,
//!   by less than 0.5 m; [`GEO_MARGIN_M`] (1 m) covers that twice, which is what the nearest
//!   search's margin needs (the `k`-th and a closer driver may each be off by that much). A
//!   radius query searches Redis with the radius scaled to Redis's sphere plus the margin,
//!   then applies the exact radius on the client.
//! - Redis GEO holds latitudes within ±[`MAX_GEO_LAT`] only (the Web Mercator square).
//!   Drivers and query points beyond it are refused with [`Error::OutsideGeoRange`] before any
//!   round trip. The in-process index covers the whole sphere.
//! - Redis's radius search misses drivers when its circle reaches past a pole (Redis bounds
//!   the circle by a box whose width it divides by the cosine of the latitude reached, which
//!   is negative there: 600 km around (-84.62, -150.94) found nothing where 550 km and
//!   700 km found two drivers), and, at any radius, drivers and query points within a
//!   rounding of longitude 180 or of latitude [`MAX_GEO_LAT`]: Redis puts them one cell past
//!   its last, which no search covers and whose neighbours do not wrap. So no search goes
//!   past [`MAX_SEARCH_M`] nor within 0.1° of a pole (from 539 km around a point at the edge
//!   of Redis's latitudes; test `searches_reaching_past_a_pole_find_every_driver`), a
//!   longitude within 1e-9° of 180 is sent to Redis as -180 (the same meridian) and a
//!   latitude within 1e-9° of [`MAX_GEO_LAT`] as 1e-9° below it (0.1 mm at most; test
//!   `drivers_and_queries_at_the_top_edges_of_the_geo_range_are_found`); drivers keep the
//!   position they reported.
//!
//! # Time and staleness
//!
//! Reports are stamped, and staleness judged, by the server's clock (`TIME` inside the
//! scripts), never a client's: every matcher process then agrees on which drivers are stale,
//! however their own clocks differ. What remains is the server's own clock: a forward step of
//! it makes every driver stale until it reports again, a backward step keeps them fresh
//! longer; after a failover, the replica's clock takes over. [`DriverRecord::seen_nanos`] is
//! the server's time of the last report, in nanoseconds since 1970 (microsecond precision),
//! and [`DriverRecord::age`] how long before the read that was, on the reading process's
//! clock. [`RedisIndex::restore`] goes by the age, as [`Index::restore`](crate::Index::restore)
//! does, so records move between any two indexes, in-process or shared (tests
//! `a_record_restored_on_the_shared_index_keeps_its_age`,
//! `a_restored_record_goes_by_its_age_not_its_clock_reading`).
//!
//! # Failures
//!
//! Connections are pooled; one that turns out dead (a server restart, or a connection cut
//! after the server ran the call but before its answer arrived) is dropped with the other
//! idle ones, and a call that is harmless to run twice is sent once more on a fresh
//! connection: queries, reads and position updates, which leave what one run leaves, and
//! state sets, which carry a nonce the server keeps with the word it set, so a second run
//! finds its own first run and answers that word instead of moving the version again, even
//! after other state sets of the driver (tests
//! `a_resent_state_set_whose_first_run_applied_moves_the_version_once`,
//! `a_resent_state_set_finds_its_first_run_after_another_set_of_the_driver`). A removal
//! carries a nonce too, and the server keeps with it the record it took, so a removal sent
//! again answers that record rather than "unknown": a hand-off that meets a cut connection
//! still has the driver's state and version to restore on its new node (test
//! `a_resent_removal_whose_first_run_applied_answers_the_record_it_took`). A position
//! update carries no nonce: resent after another process's later update of the same driver,
//! it puts the older position back until the driver's next report. A claim, an accept
//! or decline, an insert or a restore is not resent: if its connection fails, it is
//! [`Error::Backend`] and its outcome is unknown, and so is that of any call that times out
//! (a removal that timed out may have taken the driver and its record with it). Read the
//! driver back; a driver left offered by a claim whose answer was lost is reset with
//! [`RedisIndex::set_state`]. A claim that timed out may also still be on its way and reach
//! the server after that read, leaving the driver offered to nobody; a state set spends the
//! version the claim carries, so a claim arriving after it loses (test
//! `a_slow_server_is_a_timeout_and_the_driver_can_be_read_back`).
//!
//! A server that loses writes (a restart from an older snapshot or an append-only file
//! that was not synced, a failover to a replica that had not received them, `FLUSHALL`)
//! rolls drivers' words and the version counter back, so counting alone would issue again
//! the very word of a claim made before the loss. A claim therefore moves the driver to a
//! version of at least the server's time in microseconds (`TIME`, times 4 in the word): a
//! claim made after the loss carries a later time, and one made before it is refused as
//! [`Error::ClaimInvalid`] (tests `a_claim_from_before_a_rollback_restart_does_not_hold`,
//! `a_claim_from_before_a_data_loss_does_not_hold_after_it`). This holds while the server's
//! clock after the loss reads later than when the earlier claim was made: a failover to a
//! replica whose clock is behind by more than the time between the two claims can repeat a
//! word.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use infra_common::redis::{Connections, Script};
use infra_common::sync::atomic::{AtomicU64, Ordering};
use redis::{Connection, RedisError, Value};

use crate::geo::EARTH_RADIUS_M;
use crate::{
    BackendFailure, Candidate, Claim, DriverId, DriverProfile, DriverRecord, DriverState, Drivers,
    Error, Filter, MAX_K, Point, VehicleClass, Version,
};

/// The largest latitude, north or south, that Redis GEO holds (degrees).
pub const MAX_GEO_LAT: f64 = 85.051_128_78;

/// How long past the longest a resend can take (four timeouts) the server remembers a state
/// set's nonce: room for a server clock stepped forward meanwhile.
pub const REQUEST_MEMORY_MARGIN: Duration = Duration::from_secs(60);

/// The radius of Redis's sphere, in meters (Redis's `EARTH_RADIUS_IN_METERS`).
pub const REDIS_EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// How much farther than the `k`-th candidate (by Redis's distance) a nearest query looks,
/// and how much a radius query adds to its radius: twice the most Redis's distance can
/// differ from ours.
pub const GEO_MARGIN_M: f64 = 1.0;

/// The least first search radius ([`RedisOptions::search_radius`]), in meters: about the
/// size of the cells Redis keeps positions in.
pub const MIN_SEARCH_RADIUS_M: f64 = 1.0;

/// The widest radius a query asks `GEOSEARCH` for, in meters of Redis's sphere (less near
/// the poles: no search comes within 0.1° of one); a query that needs more reads every
/// driver instead. It bounds what one script's search reads, and the tests compare Redis's search
/// with the in-process index up to it (to latitude 85.05 and across the antimeridian), not
/// beyond.
pub const MAX_SEARCH_M: f64 = 1_000_000.0;

/// How far short of a pole, in degrees of latitude, a search's circle stops. Redis bounds the
/// circle by a box whose half-width is the radius over the cosine of the latitude the circle
/// reaches toward the nearer pole: past the pole that cosine is negative, the box turns
/// inside out, and Redis drops the cells east and west of the query point's (test
/// `searches_reaching_past_a_pole_find_every_driver`). Up to the pole the box is whole; a
/// tenth of a degree (11 km) keeps the circle clear of it.
const POLE_CLEARANCE_DEG: f64 = 0.1;

/// The widest radius a query asks `GEOSEARCH` for around `point`, in meters of Redis's
/// sphere: [`MAX_SEARCH_M`], or less where that circle would come within
/// [`POLE_CLEARANCE_DEG`] of a pole (from 539 km at the edge of Redis's latitudes).
fn widest_search_m(point: Point) -> f64 {
    let to_pole = (90.0 - POLE_CLEARANCE_DEG - geo_lat(point).abs()).to_radians();
    MAX_SEARCH_M.min(to_pole * REDIS_EARTH_RADIUS_M)
}

/// The most drivers one script examines (reads the state, last report and record of). It
/// is the `COUNT` of each `HSCAN` page (a hint: a page may hold a few more) when a query
/// pages through the whole fleet; the budget of a nearest query's search, which pages
/// through the fleet instead once it has examined this many drivers without finding its
/// answer; and the most drivers a radius query examines in one script, paging through the
/// fleet when its radius holds more. Redis runs one script at a time, so this is what one
/// script of a query can hold the server for; other matchers' calls run between them.
pub const SCAN_PAGE: usize = 1_000;

/// How far below the top of its range (longitude 180, latitude [`MAX_GEO_LAT`]) a coordinate
/// must be for Redis to place it in a cell of its grid, in degrees (0.1 mm or less). Redis
/// scales a coordinate to its range and truncates: at the top and the double below it, the
/// scaled value rounds to the range's end, one cell past the last, which no search covers
/// (test `drivers_and_queries_at_the_top_edges_of_the_geo_range_are_found`).
const GEO_TOP_EDGE_DEG: f64 = 1e-9;

/// The longitude Redis is asked to store or search from: one within [`GEO_TOP_EDGE_DEG`] of
/// 180 is sent as -180, the same meridian (to 0.1 mm), whose cell Redis places and whose
/// neighbours wrap.
fn geo_lng(point: Point) -> f64 {
    if point.lng() > 180.0 - GEO_TOP_EDGE_DEG {
        -180.0
    } else {
        point.lng()
    }
}

/// The latitude Redis is asked to store or search from: one within [`GEO_TOP_EDGE_DEG`] of
/// [`MAX_GEO_LAT`] is sent that far below it (0.1 mm at most), inside Redis's last row of
/// cells.
fn geo_lat(point: Point) -> f64 {
    point.lat().min(MAX_GEO_LAT - GEO_TOP_EDGE_DEG)
}

// Every script takes the same keys: KEYS[1] the GEO set, KEYS[2] the last reports (sorted
// set, microseconds on the server's clock), KEYS[3] positions and profiles (hash), KEYS[4]
// state words (hash), KEYS[5] the version counter, KEYS[6] the recent state sets and
// removals (hash of "driver nonce" to the word set or the record taken), KEYS[7] when each is
// forgotten (sorted set of the same fields, µs on the server's clock). A word's state is
// `word mod 4`, read from its last two decimal digits (100 is a multiple of 4) so no word is
// ever turned into a single Lua double, which would round words above 2^53; words are
// compared and built in two parts (`words!`).

/// The server's clock in microseconds since 1970, into the Lua local `now` (exact: below
/// 2^53 until the year 2255).
macro_rules! server_now {
    () => {
        r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
"
    };
}

/// Lua functions on words (decimal text of a u64) held exactly as two doubles, `hi × 10^6 +
/// lo`: `version_part(word)`, the word less its state (`word - word mod 4`; 10^6 is a
/// multiple of 4, so no borrow), split; `above(a_hi, a_lo, b_hi, b_lo)`; `joined(hi, lo)`,
/// back to text; and `time_word(clock)`, the server's `TIME` reply in µs × 4 (a version
/// part), split.
macro_rules! words {
    () => {
        r"
local function version_part(word)
  local n = #word
  local hi, lo = 0, tonumber(word)
  if n > 6 then hi, lo = tonumber(string.sub(word, 1, n - 6)), tonumber(string.sub(word, n - 5)) end
  return hi, lo - lo % 4
end
local function above(a_hi, a_lo, b_hi, b_lo)
  return a_hi > b_hi or (a_hi == b_hi and a_lo > b_lo)
end
local function joined(hi, lo)
  if hi == 0 then return string.format('%d', lo) end
  return string.format('%.0f%06d', hi, lo)
end
local function time_word(clock)
  local micros = tonumber(clock[2]) * 4
  return tonumber(clock[1]) * 4 + math.floor(micros / 1000000), micros % 1000000
end
"
    };
}

/// Adds driver `ARGV[1]` at `ARGV[2]`, `ARGV[3]` (lng, lat) with the record `ARGV[4]` and the
/// word `ARGV[5]` (empty: the next word of the version counter, available), last heard from
/// `ARGV[6]` µs before now (empty: now). A given word is kept if its version is
/// above the counter's; otherwise the driver takes the counter's next version with the given
/// word's state. Replies 1, or 0 if the id is taken. Redis does not undo the writes of a
/// script that fails midway, so every key it writes is read first (a key of another type
/// fails the read) and the version counter, which a text that is not a number fails, is the
/// first write: a failure leaves nothing but, at most, a counter one step on.
const INSERT_SCRIPT: &str = concat!(
    words!(),
    server_now!(),
    r"
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('HEXISTS', KEYS[3], ARGV[1])
local word, state = ARGV[5], 0
if word ~= '' then
  local hi, lo = version_part(word)
  local counter_hi, counter_lo = version_part(redis.call('GET', KEYS[5]) or '0')
  if not above(hi, lo, counter_hi, counter_lo) then
    state = tonumber(string.sub(word, -2)) % 4
    word = ''
  end
end
if word == '' then
  -- A version above every version a removed driver of this index reached (see the take in
  -- READ_SCRIPT), so no claim on an earlier incarnation of this id can match. Read back as
  -- a string: INCRBY's integer reply would reach Lua as a double, rounded above 2^53.
  redis.call('INCRBY', KEYS[5], 4)
  word = redis.call('GET', KEYS[5])
end
redis.call('GEOADD', KEYS[1], ARGV[2], ARGV[3], ARGV[1])
-- A last report placed by its age on this server's clock: the record's own reading is on
-- another clock (an in-process index's, counted from its start, or another server's).
local seen = now
if ARGV[6] ~= '' then seen = math.max(now - tonumber(ARGV[6]), 0) end
redis.call('ZADD', KEYS[2], string.format('%.0f', seen), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], word)
if state ~= 0 then redis.call('HINCRBY', KEYS[4], ARGV[1], state) end
return 1
"
);

/// Moves driver `ARGV[1]` to `ARGV[2]`, `ARGV[3]` (lng, lat), whose record starts `ARGV[4]`
/// (`"lat lng"`), heard from now. Replies 1, 0 for an unknown driver, 2 for a record this
/// crate did not write. Every key it writes is read before the first write, so a key of
/// another type fails it before anything moved (see [`INSERT_SCRIPT`]).
const UPDATE_SCRIPT: &str = concat!(
    r"
local record = redis.call('HGET', KEYS[3], ARGV[1])
if not record then return 0 end
local profile = string.match(record, '^%S+ %S+ (%d+ %d+)$')
if not profile then return 2 end
redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('GEOADD', KEYS[1], ARGV[2], ARGV[3], ARGV[1])
",
    server_now!(),
    r"
redis.call('ZADD', KEYS[2], string.format('%.0f', now), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4] .. ' ' .. profile)
return 1
"
);

/// Forgets up to two requests whose time to be sent again has passed (`now` in µs on the
/// server's clock), so the request keys hold about the requests of the last
/// [`REQUEST_MEMORY_MARGIN`] and four timeouts, never one entry per request ever made.
macro_rules! forget_expired {
    () => {
        r"
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, 2)) do
  redis.call('HDEL', KEYS[6], old)
  redis.call('ZREM', KEYS[7], old)
end
"
    };
}

/// Reads driver `ARGV[1]`: `{1, word, record, seen}` or `{0}`. With `ARGV[2] == 'take'`,
/// also removes it, first raising the version counter to at least the driver's version (as
/// a word: `version × 4`), so the next insert of any id starts above it; a take carries the
/// request's nonce `ARGV[3]` and is remembered for `ARGV[4]` µs with what it took, so a take
/// sent again after its answer was lost answers the record its first run took (as a state
/// set finds its first run) instead of `{0}`, which would lose the record with the driver.
const READ_SCRIPT: &str = concat!(
    words!(),
    r"
local taking = ARGV[2] == 'take'
local now, request
if taking then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
",
    forget_expired!(),
    r"
  request = ARGV[1] .. ' ' .. ARGV[3]
  local taken = redis.call('HGET', KEYS[6], request)
  if taken then
    local word, seen, record = string.match(taken, '^([^|]*)|([^|]*)|(.*)$')
    if word then return {1, word, record, seen} end
  end
end
local word = redis.call('HGET', KEYS[4], ARGV[1])
if not word then return {0} end
local record = redis.call('HGET', KEYS[3], ARGV[1]) or ''
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1]) or ''
if taking then
  local hi, lo = version_part(word)
  local counter_hi, counter_lo = version_part(redis.call('GET', KEYS[5]) or '0')
  if above(hi, lo, counter_hi, counter_lo) then redis.call('SET', KEYS[5], joined(hi, lo)) end
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('HSET', KEYS[6], request, word .. '|' .. seen .. '|' .. record)
  redis.call('ZADD', KEYS[7], string.format('%.0f', now + tonumber(ARGV[4])), request)
end
return {1, word, record, seen}
"
);

/// Takes out up to `ARGV[2]` drivers last heard from `ARGV[1]` µs or longer before now (the
/// server's clock), the longest silent first, each as [`READ_SCRIPT`]'s take does (the version
/// counter raised to the highest of their versions). Replies `{n, id, word, record, seen, ...}`:
/// `n` the entries taken from the last reports, and the drivers among them (an entry of no
/// driver, which only another program can leave, is dropped without a record).
const IDLE_SCRIPT: &str = concat!(
    words!(),
    server_now!(),
    r"
local cutoff = string.format('%.0f', now - tonumber(ARGV[1]))
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
local counter_hi, counter_lo = version_part(redis.call('GET', KEYS[5]) or '0')
local raised = false
local reply = {#ids}
for _, id in ipairs(ids) do
  local word = redis.call('HGET', KEYS[4], id)
  if word then
    local hi, lo = version_part(word)
    if above(hi, lo, counter_hi, counter_lo) then counter_hi, counter_lo, raised = hi, lo, true end
    reply[#reply + 1] = id
    reply[#reply + 1] = word
    reply[#reply + 1] = redis.call('HGET', KEYS[3], id) or ''
    reply[#reply + 1] = redis.call('ZSCORE', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
if raised then redis.call('SET', KEYS[5], joined(counter_hi, counter_lo)) end
return reply
"
);

/// Sets driver `ARGV[1]`'s state to code `ARGV[2]` with the next version, for the request
/// with nonce `ARGV[3]`, remembered for `ARGV[4]` µs: `{1, word}` or `{0}`. A request that
/// is remembered ran already (its answer was lost and it was sent again): it changes
/// nothing and replies the word that run set, whatever ran since.
const SET_STATE_SCRIPT: &str = concat!(
    server_now!(),
    // Each set remembers one request and forgets up to two expired ones, so the expired never
    // pile up.
    forget_expired!(),
    r"
local request = ARGV[1] .. ' ' .. ARGV[3]
local set = redis.call('HGET', KEYS[6], request)
if set then return {1, set} end
local word = redis.call('HGET', KEYS[4], ARGV[1])
if not word then return {0} end
local state = tonumber(string.sub(word, -2)) % 4
redis.call('HINCRBY', KEYS[4], ARGV[1], 4 - state + tonumber(ARGV[2]))
word = redis.call('HGET', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[6], request, word)
redis.call('ZADD', KEYS[7], string.format('%.0f', now + tonumber(ARGV[4])), request)
return {1, word}
"
);

/// Claims driver `ARGV[1]` if its word is still `ARGV[2]` (an available one) and it reported
/// within `ARGV[3]` µs: the word moves to offered at the next version, or at the server's
/// time in µs if that is higher. Replies `{1, word}`, `{0}` unknown, `{2}` stale, `{3}`
/// lost (the word changed).
const CLAIM_SCRIPT: &str = concat!(
    words!(),
    r"
local word = redis.call('HGET', KEYS[4], ARGV[1])
if not word then return {0} end
",
    server_now!(),
    r"
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seen or now - tonumber(seen) > tonumber(ARGV[3]) then return {2} end
if word ~= ARGV[2] then return {3} end
-- A version no earlier claim had, even one made before the server lost writes (a restart
-- from an older snapshot, a failover, FLUSHALL) and rolled the word back: the server's
-- time, which has moved on since. A version already past it (rare: a driver claimed again
-- within the microsecond) goes one up. Available (0) to offered (1).
local hi, lo = version_part(word)
local time_hi, time_lo = time_word(clock)
if above(time_hi, time_lo, hi, lo) then
  redis.call('HSET', KEYS[4], ARGV[1], joined(time_hi, time_lo + 1))
else
  redis.call('HINCRBY', KEYS[4], ARGV[1], 5)
end
return {1, redis.call('HGET', KEYS[4], ARGV[1])}
"
);

/// Settles the claim of driver `ARGV[1]` at word `ARGV[2]` (offered) by adding `ARGV[3]` to
/// the word. Replies 1, 0 unknown, 2 if the word changed since the claim.
const SETTLE_SCRIPT: &str = r"
local word = redis.call('HGET', KEYS[4], ARGV[1])
if not word then return 0 end
if word ~= ARGV[2] then return 2 end
redis.call('HINCRBY', KEYS[4], ARGV[1], ARGV[3])
return 1
";

/// The Lua function `admit(id)` shared by both queries: the driver's `{id, word, record}`
/// if it is available, reported within `ARGV[4]` µs and passes the filter (`ARGV[5]` the
/// class or empty, `ARGV[6]` the least capacity), else `false`.
macro_rules! admit {
    () => {
        r"
local window, class, least = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local function admit(id)
  local word = redis.call('HGET', KEYS[4], id)
  if not word or tonumber(string.sub(word, -2)) % 4 ~= 0 then return false end
  local seen = redis.call('ZSCORE', KEYS[2], id)
  if not seen or now - tonumber(seen) > window then return false end
  local record = redis.call('HGET', KEYS[3], id)
  if not record then return false end
  local c, capacity = string.match(record, '^%S+ %S+ (%d+) (%d+)$')
  if not c or tonumber(capacity) < least or (class ~= '' and c ~= class) then return false end
  return {id, word, record}
end
"
    };
}

/// The reply of a query: `{id, word, record, ...}` of the Lua table `picked`.
macro_rules! reply_picked {
    () => {
        r"
local reply = {}
for _, v in ipairs(picked) do
  reply[#reply + 1] = v[1] reply[#reply + 1] = v[2] reply[#reply + 1] = v[3]
end
return reply
"
    };
}

/// The `ARGV[7]` nearest admitted drivers around `ARGV[1]`, `ARGV[2]` (lng, lat) and every
/// admitted driver within `ARGV[8]` m of the last of them, by Redis's distance, starting
/// from radius `ARGV[3]` m and widening up to `ARGV[9]` m, examining at most `ARGV[10]`
/// drivers; a nil reply if the budget runs out, or if `ARGV[9]` m is not far enough and
/// `ARGV[11]` is `0`, and the client pages through the fleet instead ([`SCAN_SCRIPT`]). With
/// `ARGV[11]` = `1` (a radius query, whose radius is `ARGV[9]`) fewer than `ARGV[7]` within
/// `ARGV[9]` m is an answer: every admitted driver there.
const NEAREST_SCRIPT: &str = concat!(
    server_now!(),
    admit!(),
    r"
local k, margin, radius = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[3])
local widest, budget, all_within = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11] == '1'
local count = math.max(4 * k, 32)
local verdicts, examined = {}, 0
local function nearest()
  while true do
    local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
      'BYRADIUS', string.format('%.4f', radius), 'm', 'ASC', 'COUNT', count, 'WITHDIST')
    local listed_all = #found < count
    local picked, bound, beyond = {}, nil, false
    for i = 1, #found do
      local id, distance = found[i][1], tonumber(found[i][2])
      if bound and distance > bound then beyond = true break end
      local verdict = verdicts[id]
      if verdict == nil then
        -- Out of budget: this search would read too much of the fleet in one script.
        if examined == budget then return nil end
        examined = examined + 1
        verdict = admit(id)
        verdicts[id] = verdict
      end
      if verdict then
        picked[#picked + 1] = verdict
        if #picked == k then bound = distance + margin end
      end
    end
    if beyond or (listed_all and bound and bound <= radius) then return picked end
    if listed_all then
      if radius >= widest then
        if all_within then return picked end
        return nil
      end
      radius = math.min(math.max(radius * 4, bound or 0), widest)
    else
      count = count * 4
    end
  end
end
local picked = nearest()
if not picked then return false end
",
    reply_picked!()
);

/// One page of the whole fleet: `HSCAN` of the state words from cursor `ARGV[1]` with
/// `COUNT ARGV[2]` (`ARGV[3]` unused, so `admit` finds its arguments where the queries put
/// them). Replies `{next cursor, id, word, record, ...}` of the admitted drivers of the page.
/// One script reads one page, never the fleet: Redis runs scripts one at a time, and a
/// script over every driver would stall every other matcher on the server meanwhile.
const SCAN_SCRIPT: &str = concat!(
    server_now!(),
    admit!(),
    r"
local page = redis.call('HSCAN', KEYS[4], ARGV[1], 'COUNT', ARGV[2])
local fields, picked = page[2], {}
for i = 1, #fields, 2 do
  local verdict = admit(fields[i])
  if verdict then picked[#picked + 1] = verdict end
end
local reply = {page[1]}
for _, v in ipairs(picked) do
  reply[#reply + 1] = v[1] reply[#reply + 1] = v[2] reply[#reply + 1] = v[3]
end
return reply
"
);

/// Settings of a [`RedisIndex`].
///
/// ```
/// use std::time::Duration;
/// use infra_geomatch::redis::RedisOptions;
///
/// let options = RedisOptions::default()
///     .prefix("geomatch:{berlin}")
///     .staleness(Duration::from_secs(60))
///     .timeout(Duration::from_millis(200));
/// assert_eq!(options.staleness_window(), Duration::from_secs(60));
/// ```
#[derive(Clone, Debug)]
pub struct RedisOptions {
    prefix: String,
    staleness: Duration,
    timeout: Duration,
    search_radius_m: f64,
    max_idle_connections: usize,
}

impl Default for RedisOptions {
    /// Prefix `geomatch:{drivers}`, a 30 s staleness window (as
    /// [`Config`](crate::Config)'s), a 500 ms timeout, a first search radius of 500 m, 16
    /// idle connections.
    fn default() -> Self {
        Self {
            prefix: "geomatch:{drivers}".to_owned(),
            staleness: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
            search_radius_m: 500.0,
            max_idle_connections: 16,
        }
    }
}

impl RedisOptions {
    /// The prefix of the index's keys: one index (one city or region) per prefix.
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// Drivers whose last report, on the server's clock, is older than this are left out of
    /// queries and claims. Counted in whole microseconds.
    #[must_use]
    pub fn staleness(self, window: Duration) -> Self {
        Self {
            staleness: window,
            ..self
        }
    }

    /// How long to wait for connecting, sending and each answer (default 500 ms; zero is
    /// refused by [`RedisIndex::new`]). A call that times out is [`Error::Backend`], with its
    /// outcome unknown.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The radius a nearest query searches first, in meters (default 500); it grows four
    /// times per step when too few drivers are found. Redis's search reads every driver in
    /// a few geohash cells around the radius, so too wide a first radius costs as much as a
    /// step too many: about the distance within which `k` drivers are usually available is
    /// best (on 100,000 drivers in 40 × 40 km, a 1 km search took about four times as long
    /// as a 300 m one). At least [`MIN_SEARCH_RADIUS_M`] (1 m): [`RedisIndex::new`] refuses
    /// less.
    #[must_use]
    pub fn search_radius(self, meters: f64) -> Self {
        Self {
            search_radius_m: meters,
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

    /// The staleness window.
    pub fn staleness_window(&self) -> Duration {
        self.staleness
    }
}

/// The driver index of [`Index`](crate::Index), shared by every process that talks to the same
/// Redis under the same prefix.
///
/// See the [module docs](self) for the keys, the scripts, how Redis GEO differs from the
/// in-process index and what happens on failures.
///
/// ```no_run
/// use infra_geomatch::redis::{RedisIndex, RedisOptions};
/// use infra_geomatch::{DriverId, DriverProfile, Error, Filter, Point};
///
/// let index = RedisIndex::new("redis://127.0.0.1:6379", RedisOptions::default())?;
/// index.insert(DriverId(1), Point::new(51.5074, -0.1278)?, DriverProfile::default())?;
/// let rider = Point::new(51.5076, -0.1280)?;
/// if let Some((candidate, claim)) = index.claim_nearest(rider, 10, &Filter::any())? {
///     // No other process can claim this driver until the offer is declined.
///     assert_eq!(candidate.driver, DriverId(1));
///     index.accept(&claim)?;
/// }
/// // Redis GEO cannot hold the poles: refused before any round trip.
/// let pole = Point::new(89.0, 0.0)?;
/// assert!(matches!(
///     index.insert(DriverId(2), pole, DriverProfile::default()),
///     Err(Error::OutsideGeoRange { .. })
/// ));
/// # Ok::<(), Error>(())
/// ```
pub struct RedisIndex {
    connections: Connections,
    keys: [String; 7],
    /// The issuer id of this index's claims (see [`issuer_of`]).
    issuer: u64,
    /// The first half of this index's state set nonces: random, so two indexes (in any
    /// processes) share it only by a 2^-64 chance.
    nonce_base: u64,
    /// State sets sent so far, the second half of their nonces: no two of this index's
    /// nonces are the same.
    state_sets: AtomicU64,
    /// How long the server remembers a state set, in µs, as the script takes it.
    request_memory_us: String,
    options: RedisOptions,
    /// The staleness window in µs, as the scripts take it.
    window_us: String,
    insert: Script,
    update: Script,
    read: Script,
    take: Script,
    idle: Script,
    set_state: Script,
    claim: Script,
    settle: Script,
    nearest: Script,
    scan: Script,
    /// Claims this process made, by outcome (feature `metrics`).
    #[cfg(feature = "metrics")]
    claims: crate::metrics::ClaimMetrics,
}

impl fmt::Debug for RedisIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIndex")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn backend(error: &RedisError) -> Error {
    Error::Backend(if error.is_timeout() {
        BackendFailure::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        BackendFailure::Connection
    } else if matches!(
        error.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        BackendFailure::Malformed
    } else {
        BackendFailure::Refused
    })
}

const MALFORMED: Error = Error::Backend(BackendFailure::Malformed);

/// The issuer id of the claims of the index under `prefix`: the same in every process, so
/// any `RedisIndex` on the prefix settles them, and (but for a 64-bit hash collision)
/// another prefix's index refuses them as foreign, where the same driver may hold the same
/// version. Even: in-process indexes have odd ids, so each kind refuses the other's claims;
/// never 0, which no index issues.
fn issuer_of(prefix: &str) -> u64 {
    // FNV-1a: stable across processes and builds, unlike the standard library's hasher.
    let hash = prefix
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash & !1).max(2)
}

/// Refuses a point Redis GEO cannot hold, before any round trip.
fn check_geo(point: Point) -> Result<Point, Error> {
    if point.lat().abs() <= MAX_GEO_LAT {
        Ok(point)
    } else {
        Err(Error::OutsideGeoRange {
            lat: point.lat(),
            lng: point.lng(),
        })
    }
}

/// A driver's hash record: its position exactly as reported, and its profile.
fn record_of(point: Point, profile: DriverProfile) -> String {
    // `Display` of an f64 is the shortest text that parses back to the same value.
    format!(
        "{} {} {} {}",
        point.lat(),
        point.lng(),
        profile.class.0,
        profile.capacity
    )
}

fn parse_record(record: &[u8]) -> Result<(Point, DriverProfile), Error> {
    let text = std::str::from_utf8(record).map_err(|_| MALFORMED)?;
    let mut fields = text.split(' ');
    let mut next = || fields.next().ok_or(MALFORMED);
    let lat: f64 = next()?.parse().map_err(|_| MALFORMED)?;
    let lng: f64 = next()?.parse().map_err(|_| MALFORMED)?;
    let class: u8 = next()?.parse().map_err(|_| MALFORMED)?;
    let capacity: u8 = next()?.parse().map_err(|_| MALFORMED)?;
    if fields.next().is_some() {
        return Err(MALFORMED);
    }
    let point = Point::new(lat, lng).map_err(|_| MALFORMED)?;
    Ok((
        point,
        DriverProfile {
            class: VehicleClass(class),
            capacity,
        },
    ))
}

fn parse_u64(bytes: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(MALFORMED)
}

fn bytes(value: &Value) -> Result<&[u8], Error> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        _ => Err(MALFORMED),
    }
}

/// A driver's record from the server's word, record and last report (µs since 1970).
fn driver_record(
    id: DriverId,
    word: &Value,
    record: &Value,
    seen: &Value,
) -> Result<DriverRecord, Error> {
    let word = parse_u64(bytes(word)?)?;
    let (point, profile) = parse_record(bytes(record)?)?;
    // Scores come back as doubles printed in full: whole microseconds.
    let seen_us: f64 = std::str::from_utf8(bytes(seen)?)
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|us: &f64| us.is_finite() && *us >= 0.0)
        .ok_or(MALFORMED)?;
    // `as` from a finite, non-negative double saturates at u64::MAX.
    let seen_nanos = (seen_us as u64).saturating_mul(1_000);
    Ok(DriverRecord {
        id,
        point,
        profile,
        state: DriverState::from_code(word),
        version: Version(word),
        seen_nanos,
        // The server's clock against this process's: close enough for staleness.
        age: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(std::time::Duration::from_nanos(seen_nanos)),
    })
}

impl RedisIndex {
    /// An index on the Redis at `url` (`redis://host:port/db`). No connection is made until
    /// the first call.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a malformed URL, a search radius that is not a finite
    /// number of meters of at least [`MIN_SEARCH_RADIUS_M`], or a zero timeout.
    ///
    /// ```
    /// use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// assert!(RedisIndex::new("redis://127.0.0.1:6379", RedisOptions::default()).is_ok());
    /// assert!(RedisIndex::new("not a url", RedisOptions::default()).is_err());
    /// assert!(RedisIndex::new("redis://127.0.0.1", RedisOptions::default().search_radius(0.0)).is_err());
    /// ```
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, Error> {
        // Queries send the radius to 0.1 mm, and a search widens it fourfold from there: a
        // radius that prints as zero would never widen, and one below the precision of
        // Redis's positions finds nothing a meter would not.
        if !(options.search_radius_m.is_finite() && options.search_radius_m >= MIN_SEARCH_RADIUS_M)
        {
            return Err(Error::InvalidConfig(
                "the search radius must be a finite number of meters, at least 1",
            ));
        }
        // The sockets refuse a zero timeout, so every call would fail as a lost connection
        // (whose outcome is unknown) rather than as the configuration it is.
        if options.timeout.is_zero() {
            return Err(Error::InvalidConfig("the Redis timeout must be positive"));
        }
        let connections = Connections::open(url, options.timeout, options.max_idle_connections)
            .map_err(|_| Error::InvalidConfig("the Redis URL is malformed"))?;
        let prefix = &options.prefix;
        let keys = [
            "geo",
            "seen",
            "drivers",
            "words",
            "versions",
            "requests",
            "request-expiry",
        ]
        .map(|name| format!("{prefix}:{name}"));
        // Sending, the lost answer, connecting again and sending again each take at most
        // the timeout.
        let request_memory = options
            .timeout
            .saturating_mul(4)
            .saturating_add(REQUEST_MEMORY_MARGIN);
        Ok(Self {
            connections,
            keys,
            issuer: issuer_of(prefix),
            nonce_base: RandomState::new().hash_one(()),
            state_sets: AtomicU64::new(0),
            request_memory_us: request_memory.as_micros().to_string(),
            window_us: options.staleness.as_micros().to_string(),
            options,
            // A second insert or restore would answer "duplicate" for a driver the first run
            // added, a second claim "lost" and leave the driver offered to nobody, a second
            // settle "invalid": none is resent. A position update run twice leaves what one
            // run leaves; a state set and a take carry a nonce by which the second run finds
            // the first (a take without it would answer "unknown" and lose the record).
            insert: Script::new(INSERT_SCRIPT, false),
            update: Script::new(UPDATE_SCRIPT, true),
            read: Script::new(READ_SCRIPT, true),
            take: Script::new(READ_SCRIPT, true),
            idle: Script::new(IDLE_SCRIPT, false),
            set_state: Script::new(SET_STATE_SCRIPT, true),
            claim: Script::new(CLAIM_SCRIPT, false),
            settle: Script::new(SETTLE_SCRIPT, false),
            nearest: Script::new(NEAREST_SCRIPT, true),
            scan: Script::new(SCAN_SCRIPT, true),
            #[cfg(feature = "metrics")]
            claims: crate::metrics::ClaimMetrics::new(&metrics::SharedString::const_str(
                crate::metrics::DEFAULT_INDEX_NAME,
            )),
        })
    }

    /// Names the index in its metrics (feature `metrics`): the `index` label of the claims it
    /// counts ([`CLAIMS_TOTAL`](crate::metrics::CLAIMS_TOTAL), `won` and `lost`), as
    /// [`Index::with_metrics_name`](crate::Index::with_metrics_name) does. The counts are of
    /// this process's claims; install the recorder before naming the index.
    ///
    /// ```
    /// use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?
    ///     .with_metrics_name("berlin");
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.claims = crate::metrics::ClaimMetrics::new(&metrics::SharedString::from(name.into()));
        self
    }

    /// The settings.
    ///
    /// ```
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// assert_eq!(index.options().staleness_window().as_secs(), 30);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// How many drivers the index holds, in any state (one round trip).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the server fails.
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// println!("{} drivers", index.len()?);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize, Error> {
        self.on_connection(true, |connection| {
            redis::cmd("HLEN").arg(&self.keys[3]).query(connection)
        })
    }

    /// Whether the index holds no driver (one round trip).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the server fails.
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// assert!(index.is_empty()? == (index.len()? == 0));
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.len().map(|len| len == 0)
    }

    /// Adds a driver, `Available`, heard from now (the server's clock).
    ///
    /// # Errors
    ///
    /// [`Error::OutsideGeoRange`] beyond ±[`MAX_GEO_LAT`] (before any round trip);
    /// [`Error::DuplicateDriver`] if the id is taken; [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Error, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// let at = Point::new(48.85, 2.35)?;
    /// index.insert(DriverId(1), at, DriverProfile::default())?;
    /// assert_eq!(index.insert(DriverId(1), at, DriverProfile::default()), Err(Error::DuplicateDriver(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error> {
        self.add(
            id, point, profile,
            // Empty: the script takes the next word of the index's version counter.
            "", "",
        )
    }

    /// Adds a driver as recorded elsewhere, by another `RedisIndex` or an in-process
    /// [`Index`](crate::Index): state, version and last report. As
    /// [`Index::restore`](crate::Index::restore), the last report is placed
    /// [`DriverRecord::age`] before the server's clock reads now, and `seen_nanos` (a reading
    /// of the other index's clock) is not used, so a hand-off written against [`Drivers`]
    /// keeps a driver as fresh as it was whichever backends it moves between (test
    /// `a_record_restored_on_the_shared_index_keeps_its_age`). A `RedisIndex` computes a
    /// record's age on the reading process's clock against the server's, so between two
    /// servers it is off by that process's skew from them. As
    /// [`Index::restore`](crate::Index::restore), the version is kept only if it is above
    /// every version this index's counter has reached (see the module docs), else the driver
    /// gets the next one, so a claim from an earlier stay never holds.
    ///
    /// # Errors
    ///
    /// As [`RedisIndex::insert`]; [`Error::InconsistentRecord`] (before any round trip) if the
    /// record's state is not the one its version encodes, or its version is 2^61 or above, as
    /// [`Index::restore`](crate::Index::restore) refuses them.
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, DriverState, Point};
    /// let berlin = RedisIndex::new("redis://127.0.0.1", RedisOptions::default().prefix("geomatch:{berlin}"))?;
    /// let potsdam = RedisIndex::new("redis://127.0.0.1", RedisOptions::default().prefix("geomatch:{potsdam}"))?;
    /// berlin.insert(DriverId(1), Point::new(52.45, 13.2)?, DriverProfile::default())?;
    /// berlin.set_state(DriverId(1), DriverState::Busy)?;
    /// potsdam.restore(berlin.remove(DriverId(1))?)?;
    /// assert_eq!(potsdam.driver(DriverId(1))?.state, DriverState::Busy);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn restore(&self, record: DriverRecord) -> Result<(), Error> {
        crate::driver::check_record(&record)?;
        self.add(
            record.id,
            record.point,
            record.profile,
            &record.version.0.to_string(),
            &record.age.as_micros().to_string(),
        )
    }

    fn add(
        &self,
        id: DriverId,
        point: Point,
        profile: DriverProfile,
        word: &str,
        age_us: &str,
    ) -> Result<(), Error> {
        let point = check_geo(point)?;
        let reply = self.run(
            &self.insert,
            &[
                &id.to_string(),
                &geo_lng(point).to_string(),
                &geo_lat(point).to_string(),
                &record_of(point, profile),
                word,
                age_us,
            ],
        )?;
        match reply {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::DuplicateDriver(id)),
            _ => Err(MALFORMED),
        }
    }

    /// Records a driver's new position and that it was heard from now (the server's clock).
    ///
    /// # Errors
    ///
    /// [`Error::OutsideGeoRange`] (before any round trip); [`Error::UnknownDriver`];
    /// [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Error, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// index.update(DriverId(1), Point::new(0.5, 0.5)?)?;
    /// assert_eq!(index.driver(DriverId(1))?.point, Point::new(0.5, 0.5)?);
    /// assert_eq!(index.update(DriverId(2), Point::new(0.0, 0.0)?), Err(Error::UnknownDriver(DriverId(2))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn update(&self, id: DriverId, point: Point) -> Result<(), Error> {
        let point = check_geo(point)?;
        let reply = self.run(
            &self.update,
            &[
                &id.to_string(),
                &geo_lng(point).to_string(),
                &geo_lat(point).to_string(),
                &format!("{} {}", point.lat(), point.lng()),
            ],
        )?;
        match reply {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::UnknownDriver(id)),
            _ => Err(MALFORMED),
        }
    }

    /// Takes a driver out of the index and returns what it held. An outstanding claim on it
    /// stops holding.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`]; [`Error::Backend`] (after a timeout, or a connection lost
    /// twice, the driver may or may not be gone, its record with it; a connection lost once
    /// is sent again, and a removal its first run made answers the record it took).
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// assert_eq!(index.remove(DriverId(1))?.id, DriverId(1));
    /// assert!(index.remove(DriverId(1)).is_err());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn remove(&self, id: DriverId) -> Result<DriverRecord, Error> {
        self.read_driver(
            &self.take,
            id,
            &["take", &self.nonce(), &self.request_memory_us],
        )
    }

    /// A copy of what the index holds about a driver.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`]; [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, DriverState, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// assert_eq!(index.driver(DriverId(1))?.state, DriverState::Available);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn driver(&self, id: DriverId) -> Result<DriverRecord, Error> {
        self.read_driver(&self.read, id, &["read"])
    }

    fn read_driver(
        &self,
        script: &Script,
        id: DriverId,
        mode: &[&str],
    ) -> Result<DriverRecord, Error> {
        let id_text = id.to_string();
        let args: Vec<&str> = std::iter::once(id_text.as_str())
            .chain(mode.iter().copied())
            .collect();
        let reply = self.run(script, &args)?;
        let Value::Array(fields) = &reply else {
            return Err(MALFORMED);
        };
        match fields.as_slice() {
            [Value::Int(0)] => Err(Error::UnknownDriver(id)),
            [Value::Int(1), word, record, seen] => driver_record(id, word, record, seen),
            _ => Err(MALFORMED),
        }
    }

    /// Takes out every driver not heard from for `idle` or longer (on the server's clock, by
    /// the sorted set of last reports), whatever its state, and returns what each held (as
    /// [`RedisIndex::remove`] does), so a fleet can hand the records elsewhere or drop them.
    /// Each removal raises the version counter as a removal does, so a driver inserted again
    /// starts above every version it had.
    ///
    /// Stale drivers are already left out of queries and claims, but they stay in the keys
    /// until removed, and a query examines them to pass over them: a driver whose app died
    /// without going offline costs memory for ever, and once more than [`SCAN_PAGE`] of them
    /// lie around a query's point, that query pages through the whole fleet. Call this
    /// periodically. It reads the sorted set of last reports, not the fleet: one script per
    /// [`SCAN_PAGE`] idle drivers, the longest silent first, so other calls run between the
    /// pages; a driver that reports before its page runs stays.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`]: the drivers of the pages before the failure are gone and their
    /// records with them; those of the failed page may or may not be gone.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// for record in index.remove_idle(Duration::from_secs(600))? {
    ///     println!("driver {} silent for {:?}: removed", record.id, record.age);
    /// }
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn remove_idle(&self, idle: Duration) -> Result<Vec<DriverRecord>, Error> {
        let idle_us = idle.as_micros().to_string();
        let page = SCAN_PAGE.to_string();
        let mut removed = Vec::new();
        loop {
            let reply = self.run(&self.idle, &[&idle_us, &page])?;
            let (taken, drivers) = fields(&reply)?.split_first().ok_or(MALFORMED)?;
            let Value::Int(taken) = *taken else {
                return Err(MALFORMED);
            };
            if !drivers.len().is_multiple_of(4) {
                return Err(MALFORMED);
            }
            for driver in drivers.chunks_exact(4) {
                let id = DriverId(parse_u64(bytes(&driver[0])?)?);
                removed.push(driver_record(id, &driver[1], &driver[2], &driver[3])?);
            }
            // A short page: no driver was left idle when it ran.
            if usize::try_from(taken).map_or(true, |taken| taken < SCAN_PAGE) {
                return Ok(removed);
            }
        }
    }

    /// Sets a driver's state whatever it was and returns the new version. Any outstanding
    /// claim on the driver stops holding.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`]; [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, DriverState, Error, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let seen = index.driver(DriverId(1))?.version;
    /// index.set_state(DriverId(1), DriverState::Offline)?;
    /// assert_eq!(index.claim(DriverId(1), seen), Err(Error::ClaimLost(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_state(&self, id: DriverId, state: DriverState) -> Result<Version, Error> {
        let reply = self.run(
            &self.set_state,
            &[
                &id.to_string(),
                &state.code().to_string(),
                &self.nonce(),
                &self.request_memory_us,
            ],
        )?;
        let Value::Array(fields) = &reply else {
            return Err(MALFORMED);
        };
        match fields.as_slice() {
            [Value::Int(0)] => Err(Error::UnknownDriver(id)),
            [Value::Int(1), word] => Ok(Version(parse_u64(bytes(word)?)?)),
            _ => Err(MALFORMED),
        }
    }

    /// A nonce for one state set: this index's random base and its count of state sets, so
    /// never the same twice in one index, and across indexes only if their bases collide.
    fn nonce(&self) -> String {
        let count = self.state_sets.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{count:x}", self.nonce_base)
    }

    /// Claims a driver found at `version`: moves it from `Available` to `Offered` if nothing
    /// changed since, in one script, so two claimers of one driver — in any processes — never
    /// both win.
    ///
    /// # Errors
    ///
    /// As [`Index::claim`](crate::Index::claim): [`Error::NotAvailable`] (before any round
    /// trip), [`Error::Stale`], [`Error::ClaimLost`], [`Error::UnknownDriver`]; and
    /// [`Error::Backend`], after which the claim may or may not have been made.
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Error, Filter, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// let at = Point::new(0.0, 0.0)?;
    /// index.insert(DriverId(1), at, DriverProfile::default())?;
    /// let found = index.nearest(at, 1, &Filter::any())?[0];
    /// let won = index.claim(found.driver, found.version)?;
    /// assert_eq!(index.claim(found.driver, found.version), Err(Error::ClaimLost(DriverId(1))));
    /// index.decline(won)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn claim(&self, id: DriverId, version: Version) -> Result<Claim, Error> {
        let seen_state = DriverState::from_code(version.0);
        if seen_state != DriverState::Available {
            return Err(Error::NotAvailable {
                driver: id,
                state: seen_state,
            });
        }
        let reply = self.run(
            &self.claim,
            &[&id.to_string(), &version.0.to_string(), &self.window_us],
        )?;
        let Value::Array(fields) = &reply else {
            return Err(MALFORMED);
        };
        match fields.as_slice() {
            [Value::Int(1), word] => {
                let version = Version(parse_u64(bytes(word)?)?);
                #[cfg(feature = "metrics")]
                self.claims.won();
                Ok(Claim {
                    driver: id,
                    version,
                    issuer: self.issuer,
                })
            }
            [Value::Int(0)] => Err(Error::UnknownDriver(id)),
            [Value::Int(2)] => Err(Error::Stale(id)),
            [Value::Int(3)] => {
                #[cfg(feature = "metrics")]
                self.claims.lost();
                Err(Error::ClaimLost(id))
            }
            _ => Err(MALFORMED),
        }
    }

    fn settle(&self, claim: &Claim, to: DriverState) -> Result<(), Error> {
        let id = claim.driver;
        // A claim of another index (in-process, or another prefix) names another index's
        // driver: its version could equal a word here, so it is refused before any round trip.
        if claim.issuer != self.issuer {
            return Err(Error::ForeignClaim(id));
        }
        // From offered (1) to `to`, one version up.
        let step = 4 - DriverState::Offered.code() + to.code();
        let reply = self.run(
            &self.settle,
            &[
                &id.to_string(),
                &claim.version.0.to_string(),
                &step.to_string(),
            ],
        )?;
        match reply {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::UnknownDriver(id)),
            Value::Int(2) => Err(Error::ClaimInvalid(id)),
            _ => Err(MALFORMED),
        }
    }

    /// The driver accepted the offer: `Offered → Busy`.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`] if the claim no longer holds; [`Error::ForeignClaim`] for a
    /// claim of an in-process index or of an index on another prefix (before any round
    /// trip); [`Error::UnknownDriver`]; [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Error, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let claim = index.claim(DriverId(1), index.driver(DriverId(1))?.version)?;
    /// index.accept(&claim)?;
    /// assert_eq!(index.accept(&claim), Err(Error::ClaimInvalid(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn accept(&self, claim: &Claim) -> Result<(), Error> {
        self.settle(claim, DriverState::Busy)
    }

    /// The driver declined, or the offer timed out: `Offered → Available`.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`] if the claim no longer holds; [`Error::ForeignClaim`] for a
    /// claim of an in-process index or of an index on another prefix (before any round
    /// trip); [`Error::UnknownDriver`]; [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, DriverState, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let claim = index.claim(DriverId(1), index.driver(DriverId(1))?.version)?;
    /// index.decline(claim)?;
    /// assert_eq!(index.driver(DriverId(1))?.state, DriverState::Available);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn decline(&self, claim: Claim) -> Result<(), Error> {
        self.settle(&claim, DriverState::Available)
    }

    /// The `k` nearest available, fresh drivers that pass `filter`, nearest first, by exact
    /// great-circle distance on the crate's sphere (ties by id): the in-process index's
    /// answer (but for drivers as near to a rounding, see the module docs), in one round
    /// trip, or one per [`SCAN_PAGE`] drivers when it has to read the whole fleet (see the
    /// module docs for the search).
    ///
    /// # Errors
    ///
    /// [`Error::TooManyResults`] above [`MAX_K`] and [`Error::OutsideGeoRange`] (both before
    /// any round trip); [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Filter, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// for i in 0..5u32 {
    ///     let at = Point::new(0.0, 0.001 * f64::from(i))?;
    ///     index.insert(DriverId(u64::from(i)), at, DriverProfile::default())?;
    /// }
    /// let found = index.nearest(Point::new(0.0, 0.0021)?, 2, &Filter::any())?;
    /// assert_eq!([found[0].driver, found[1].driver], [DriverId(2), DriverId(3)]);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        if k > MAX_K {
            return Err(Error::TooManyResults { k, max: MAX_K });
        }
        let point = check_geo(point)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        self.search(
            point,
            k,
            f64::INFINITY,
            widest_search_m(point),
            false,
            filter,
        )
    }

    /// The available, fresh drivers within `radius_m` meters (great-circle, on the crate's
    /// sphere) that pass `filter`, nearest first (ties by id), at most `limit` of them (the
    /// nearest): the in-process index's answer (but for drivers as near to a rounding, see the
    /// module docs). Searched as [`nearest`](Self::nearest) searches for `limit` drivers, no
    /// wider than the radius, in one round trip; it pages through the fleet, one round trip
    /// per [`SCAN_PAGE`] drivers and holding at most `limit` plus a page, where `nearest`
    /// would: more drivers to examine than one script may, or (for a radius beyond the widest
    /// search, [`MAX_SEARCH_M`] or less near a pole) fewer than `limit` within it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRadius`] if the radius is negative or not finite,
    /// [`Error::TooManyResults`] above [`MAX_K`] and [`Error::OutsideGeoRange`] (all before
    /// any round trip); [`Error::Backend`].
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Filter, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?; // 111 m
    /// index.insert(DriverId(2), Point::new(0.0, 0.01)?, DriverProfile::default())?;  // 1.1 km
    /// let found = index.within(Point::new(0.0, 0.0)?, 500.0, 100, &Filter::any())?;
    /// assert_eq!(found.len(), 1);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn within(
        &self,
        point: Point,
        radius_m: f64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        if !(radius_m.is_finite() && radius_m >= 0.0) {
            return Err(Error::InvalidRadius(radius_m));
        }
        if limit > MAX_K {
            return Err(Error::TooManyResults {
                k: limit,
                max: MAX_K,
            });
        }
        let point = check_geo(point)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let redis_radius = radius_m * (REDIS_EARTH_RADIUS_M / EARTH_RADIUS_M) + GEO_MARGIN_M;
        // Searched as `nearest` searches, no wider than the radius: a small limit costs what a
        // nearest query of its size costs, however wide the radius. Within the widest search,
        // fewer than `limit` drivers inside is the answer; beyond it, only the whole fleet
        // can say, as for `nearest`.
        let widest_search = widest_search_m(point);
        let widest = redis_radius.min(widest_search);
        let all_within = redis_radius <= widest_search;
        self.search(point, limit, radius_m, widest, all_within, filter)
    }

    /// The `k` nearest admitted drivers within `radius_m` of `point`, nearest first: one
    /// query script widening up to `widest` m (Redis's distance), whose answer, when fewer
    /// than `k` are that near, is all of them if `all_within` (the radius is `widest`) and
    /// otherwise a page-by-page read of the fleet, as when the script's budget runs out.
    fn search(
        &self,
        point: Point,
        k: usize,
        radius_m: f64,
        widest: f64,
        all_within: bool,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        // Redis reads a radius in plain decimal; 0.1 mm is finer than any distance here.
        let args = self.query_args(
            point,
            format!("{:.4}", self.options.search_radius_m.min(widest)),
            filter,
            [
                k.to_string(),
                GEO_MARGIN_M.to_string(),
                format!("{widest:.4}"),
                SCAN_PAGE.to_string(),
                u8::from(all_within).to_string(),
            ],
        );
        let reply = self.run(
            &self.nearest,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let mut found = match reply {
            // Not far enough, or more to examine than one script may: page through the fleet.
            Value::Nil => self.scan_fleet(point, filter, radius_m, k)?,
            reply => ranked(point, fields(&reply)?, radius_m)?,
        };
        found.truncate(k);
        Ok(found)
    }

    /// The `limit` nearest admitted drivers of the fleet within `radius_m` of `point`,
    /// nearest first (ties by id), read [`SCAN_PAGE`] drivers per script and keeping no more
    /// than `limit` between pages. The pages are not one snapshot: a driver available
    /// throughout is found (`HSCAN` returns every field present for the whole scan), one that
    /// changes, arrives or leaves meanwhile may or may not be, and each page judges staleness
    /// at its own time.
    fn scan_fleet(
        &self,
        point: Point,
        filter: &Filter,
        radius_m: f64,
        limit: usize,
    ) -> Result<Vec<Candidate>, Error> {
        let (class, least) = filter_args(filter);
        let page = SCAN_PAGE.to_string();
        let mut cursor = b"0".to_vec();
        let mut found = Vec::new();
        loop {
            let text = std::str::from_utf8(&cursor).map_err(|_| MALFORMED)?;
            let reply = self.run(
                &self.scan,
                &[text, &page, "", &self.window_us, &class, &least],
            )?;
            let (next, drivers) = fields(&reply)?.split_first().ok_or(MALFORMED)?;
            found.extend(ranked(point, drivers, radius_m)?);
            keep_nearest(&mut found, limit);
            cursor = bytes(next)?.to_vec();
            if cursor == b"0" {
                break;
            }
        }
        Ok(found)
    }

    /// The arguments of the query script, then `extra`.
    fn query_args(
        &self,
        point: Point,
        radius: String,
        filter: &Filter,
        extra: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        let (class, least) = filter_args(filter);
        let mut args = vec![
            geo_lng(point).to_string(),
            geo_lat(point).to_string(),
            radius,
            self.window_us.clone(),
            class,
            least,
        ];
        args.extend(extra);
        args
    }

    /// Greedy nearest for one request: claims the first of the `k` nearest candidates whose
    /// claim wins, moving past those lost to other claimers (in any process); `None` if every
    /// one was lost or none exists.
    ///
    /// # Errors
    ///
    /// As [`RedisIndex::nearest`]; [`Error::Backend`] from a claim, after which that claim
    /// may or may not have been made.
    ///
    /// ```no_run
    /// # use infra_geomatch::redis::{RedisIndex, RedisOptions};
    /// # use infra_geomatch::{DriverId, DriverProfile, Filter, Point};
    /// let index = RedisIndex::new("redis://127.0.0.1", RedisOptions::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?;
    /// let rider = Point::new(0.0, 0.0)?;
    /// let (first, _claim) = index.claim_nearest(rider, 5, &Filter::any())?.unwrap();
    /// assert_eq!(first.driver, DriverId(1));
    /// assert!(index.claim_nearest(rider, 5, &Filter::any())?.is_none());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn claim_nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Option<(Candidate, Claim)>, Error> {
        crate::drivers::claim_first(self, self.nearest(point, k, filter)?)
    }

    /// Runs `script` on the index's keys with `args`: one round trip, two after a
    /// `NOSCRIPT` (a restarted server, or `SCRIPT FLUSH`); resent after a dead pooled
    /// connection only if the script is harmless to run twice.
    fn run(&self, script: &Script, args: &[&str]) -> Result<Value, Error> {
        self.connections
            .script(script, &self.keys, args)
            .map_err(|e| backend(&e))
    }

    /// Runs `request` on a pooled connection, sent again after a dead pooled connection if
    /// `resend` says that is harmless.
    fn on_connection<T>(
        &self,
        resend: bool,
        request: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, Error> {
        self.connections
            .run(resend, request)
            .map_err(|e| backend(&e))
    }
}

/// The filter as the query scripts take it: the class (empty for any) and the least capacity.
fn filter_args(filter: &Filter) -> (String, String) {
    // `Filter` keeps its fields private; probing `admits` recovers them exactly: the class
    // is the one class a probe with every seat admits, if only one is; the least capacity is
    // the fewest seats admitted in that class.
    let any = |class: u8, capacity: u8| {
        filter.admits(&DriverProfile {
            class: VehicleClass(class),
            capacity,
        })
    };
    let admitted: Vec<u8> = (0..=u8::MAX).filter(|&c| any(c, u8::MAX)).collect();
    let class = match admitted.as_slice() {
        [only] => only.to_string(),
        _ => String::new(),
    };
    let probe = admitted.first().copied().unwrap_or(0);
    let least = (0..=u8::MAX).find(|&seats| any(probe, seats));
    // No class admitted at all (not expressible today) is a filter no driver passes: a least
    // capacity above every u8.
    let least = least.map_or_else(|| "256".to_owned(), |seats| seats.to_string());
    (class, least)
}

/// The elements of an array reply.
fn fields(reply: &Value) -> Result<&[Value], Error> {
    match reply {
        Value::Array(fields) => Ok(fields),
        _ => Err(MALFORMED),
    }
}

/// The drivers of a query reply (`id, word, record` triples), by exact distance from `point`
/// (ties by id), within `radius_m` (infinite for no bound) by the distance each reports: near
/// the antipode of `point`, where squared chords resolve only tenths of a meter, they would
/// let in drivers beyond the radius and leave out some inside it.
fn ranked(point: Point, fields: &[Value], radius_m: f64) -> Result<Vec<Candidate>, Error> {
    if !fields.len().is_multiple_of(3) {
        return Err(MALFORMED);
    }
    let mut found = Vec::with_capacity(fields.len() / 3);
    for driver in fields.chunks_exact(3) {
        let id = DriverId(parse_u64(bytes(&driver[0])?)?);
        let word = parse_u64(bytes(&driver[1])?)?;
        let (at, _) = parse_record(bytes(&driver[2])?)?;
        // The distance as the in-process index reports it, to the last bit.
        let distance_m = point.distance_m(at);
        if distance_m <= radius_m {
            found.push(Candidate {
                driver: id,
                distance_m,
                version: Version(word),
            });
        }
    }
    // By the distance reported, then id: the squared chord can order two drivers at the same
    // reported distance either way by a rounding.
    found.sort_unstable_by(|a, b| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then(a.driver.cmp(&b.driver))
    });
    Ok(found)
}

/// Keeps the `limit` nearest of `found` (ties by id), nearest first, and one entry per driver,
/// its nearest: `HSCAN` may return a driver twice, at two positions if it moved between pages.
fn keep_nearest(found: &mut Vec<Candidate>, limit: usize) {
    let by_distance = |a: &Candidate, b: &Candidate| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then(a.driver.cmp(&b.driver))
    };
    found.sort_unstable_by(|a, b| a.driver.cmp(&b.driver).then(by_distance(a, b)));
    found.dedup_by_key(|candidate| candidate.driver);
    found.sort_unstable_by(by_distance);
    found.truncate(limit);
}

// Each method calls the inherent method of the same name: inherent methods take precedence
// over trait methods, so these are not recursive.
impl Drivers for RedisIndex {
    fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error> {
        RedisIndex::insert(self, id, point, profile)
    }

    fn restore(&self, record: DriverRecord) -> Result<(), Error> {
        RedisIndex::restore(self, record)
    }

    fn update(&self, id: DriverId, point: Point) -> Result<(), Error> {
        RedisIndex::update(self, id, point)
    }

    fn remove(&self, id: DriverId) -> Result<DriverRecord, Error> {
        RedisIndex::remove(self, id)
    }

    fn driver(&self, id: DriverId) -> Result<DriverRecord, Error> {
        RedisIndex::driver(self, id)
    }

    fn set_state(&self, id: DriverId, state: DriverState) -> Result<Version, Error> {
        RedisIndex::set_state(self, id, state)
    }

    fn claim(&self, id: DriverId, version: Version) -> Result<Claim, Error> {
        RedisIndex::claim(self, id, version)
    }

    fn accept(&self, claim: &Claim) -> Result<(), Error> {
        RedisIndex::accept(self, claim)
    }

    fn decline(&self, claim: Claim) -> Result<(), Error> {
        RedisIndex::decline(self, claim)
    }

    fn nearest(&self, point: Point, k: usize, filter: &Filter) -> Result<Vec<Candidate>, Error> {
        RedisIndex::nearest(self, point, k, filter)
    }

    fn within(
        &self,
        point: Point,
        radius_m: f64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        RedisIndex::within(self, point, radius_m, limit, filter)
    }

    fn claim_nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Option<(Candidate, Claim)>, Error> {
        RedisIndex::claim_nearest(self, point, k, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(driver: u64, distance_m: f64) -> Candidate {
        Candidate {
            driver: DriverId(driver),
            distance_m,
            version: Version(driver),
        }
    }

    /// Pages may repeat a driver at two positions: the nearer stays, once; then the nearest
    /// `limit`, ties by id.
    #[test]
    fn keep_nearest_keeps_each_drivers_nearest_and_the_limit_nearest() {
        let mut found = vec![
            candidate(4, 30.0),
            candidate(2, 10.0),
            candidate(9, 5.0),
            candidate(4, 7.0),
            candidate(1, 10.0),
            candidate(9, 50.0),
        ];
        keep_nearest(&mut found, 3);
        let kept: Vec<(u64, f64)> = found.iter().map(|c| (c.driver.0, c.distance_m)).collect();
        assert_eq!(kept, [(9, 5.0), (4, 7.0), (1, 10.0)]);
        keep_nearest(&mut found, 0);
        assert!(found.is_empty());
    }

    /// A record whose version an index could not count on from is refused as the in-process
    /// index refuses it, before any connection is tried (there is no server at this address).
    #[test]
    fn a_record_past_the_versions_of_any_index_is_refused_before_any_round_trip() {
        let index = RedisIndex::new("redis://127.0.0.1:1", RedisOptions::default()).unwrap();
        let record = DriverRecord {
            id: DriverId(1),
            point: Point::new(45.0, 7.0).unwrap(),
            profile: DriverProfile::default(),
            state: DriverState::Available,
            version: Version::from_bits(1 << 63),
            seen_nanos: 0,
            age: Duration::ZERO,
        };
        assert_eq!(
            index.restore(record),
            Err(Error::InconsistentRecord(DriverId(1)))
        );
    }

    /// The first search radius is sent to Redis to 0.1 mm: a positive radius below that
    /// would go as `0.0000`, and a search that finds nothing at radius 0 widens it to four
    /// times 0, again and again, inside one script. Such a radius is refused when the index
    /// is made, as every radius below a meter is (finer than Redis's stored positions).
    #[test]
    fn a_first_search_radius_below_a_meter_is_refused() {
        for meters in [1e-5, 4e-5, f64::MIN_POSITIVE, 0.5] {
            assert!(
                matches!(
                    RedisIndex::new("redis://x", RedisOptions::default().search_radius(meters)),
                    Err(Error::InvalidConfig(_))
                ),
                "a first search radius of {meters} m was taken"
            );
        }
        assert!(RedisIndex::new("redis://x", RedisOptions::default().search_radius(1.0)).is_ok());
    }
}
