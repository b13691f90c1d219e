//! Purge by surrogate key (tag): a log of purged tags, checked when a stored response is read.
//!
//! Each stored response records the *generation* at which its fetch began and its tags (the
//! `Surrogate-Key` response field, space separated). Purging a tag advances the generation and
//! records it against the tag; a stored response with that tag and an older generation is then
//! purged: gone (hard) or stale (soft). Taking the generation when the fetch *begins* means a
//! response fetched before a purge and stored after it is still purged.
//!
//! The log is bounded: past [`MAX_PURGED_TAGS`] tags (or [`MAX_PURGED_BYTES`] of them) it is
//! cleared and replaced by a floor,
//! under which every stored response counts as hard-purged. That empties the cache's reuse of
//! everything older, which is safe (a purge is never missed) and rare.
//!
//! A purge by URL removes (or marks) what is stored at once, but a fetch for that URL may be
//! in progress: its answer, from the origin or the shared tier, predates the purge and must not
//! be stored as if it did not. So purges by URL are logged too, by target and generation, and a
//! fetch's store consults the log under the same lock the purge holds while it records itself
//! and applies to the store: the store lands either before the purge's removal (which then
//! removes it) or after its record (which the store sees). That log is bounded the same way,
//! by [`MAX_PURGED_URLS`] (or [`MAX_PURGED_BYTES`]); past it, every fetch begun before is treated as hard-purged and its
//! answer served but not stored.
//!
//! Each purge also keeps the monotonic reading it was made at. A copy read from the shared
//! tier is judged by that instead of a generation: it may have been written there after the
//! purge's delete, by an edge the purge had not reached, so the generation of the fetch that
//! reads it (which began after the purge) says nothing; its age says when it was generated.

use std::collections::HashMap;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// The most tags the purge log remembers before it falls back to purging everything older.
pub const MAX_PURGED_TAGS: usize = 100_000;

/// The most purged URLs the purge log remembers before it falls back to refusing to store the
/// answers of every fetch begun before.
pub const MAX_PURGED_URLS: usize = 100_000;

/// The most bytes of names (tags, or URLs) each log remembers before it falls back as it does
/// past [`MAX_PURGED_TAGS`] or [`MAX_PURGED_URLS`] names: an unsafe request's URL is the
/// client's choice, so counting URLs alone would let long ones hold gigabytes.
pub const MAX_PURGED_BYTES: usize = 16 << 20;

/// The most tags one response may carry for it to be stored.
pub const MAX_TAGS_PER_RESPONSE: usize = 64;

/// The longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// How a purge treats what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PurgeMode {
    /// Mark stale: the next request revalidates with the origin (and may still be served the
    /// stored response if the origin fails and `stale-if-error` allows).
    Soft,
    /// Remove: the next request fetches afresh.
    Hard,
}

// `PurgeLog` and `Purged` are public only to the loom model of the URL hand-off
// (`tests/loom.rs`, which reaches them through `http::purge_model` under `infra_loom`);
// elsewhere the crate is their only user.

/// The state of a stored response after the purges since its fetch began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(infra_loom), allow(unreachable_pub))]
pub enum Purged {
    /// Not purged.
    No,
    /// Soft-purged: stored stale.
    Soft,
    /// Hard-purged: not stored.
    Hard,
}

/// The generation counter, the purged tags and the purged URLs.
#[derive(Debug, Default)]
#[cfg_attr(not(infra_loom), allow(unreachable_pub))]
pub struct PurgeLog {
    generation: AtomicU64,
    tags: Mutex<Purges>,
    /// Held while a URL purge records itself and applies to the store, and while a fetch checks
    /// it and stores: the two never interleave.
    urls: Mutex<Purges>,
}

/// Purged names (tags, or URL targets) with the generations of their last purges.
#[derive(Debug, Default)]
struct Purges {
    by_name: HashMap<Box<str>, Marks>,
    /// The bytes of the names in `by_name`.
    bytes: usize,
    /// Responses from generations below this are hard-purged.
    floor: u64,
    /// The monotonic reading when the floor was set (meaningful once `floor` is set).
    floor_nanos: u64,
    /// Responses from generations below this are soft-purged: fetched before purges this
    /// cache may have missed (see [`PurgeLog::purge_everything_soft`]).
    soft_floor: u64,
}

/// The generations at which a name was last purged hard and soft (0: never). Kept apart, so
/// a soft purge after a hard one marks stale what was fetched between them rather than
/// removing it, and does not soften the hard one for what was fetched before it.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    hard: u64,
    soft: u64,
    /// The monotonic reading of the latest purge, either mode: a copy from the shared tier
    /// generated before it is purged, whatever generation read it (see
    /// [`PurgeLog::predates_purge`]).
    nanos: u64,
}

impl Purges {
    /// Records a purge of `name` at generation `purged_at` and monotonic reading `nanos`,
    /// falling back to a floor past `limit` names or [`MAX_PURGED_BYTES`] of them.
    fn record(&mut self, name: &str, mode: PurgeMode, purged_at: u64, nanos: u64, limit: usize) {
        if !self.by_name.contains_key(name) {
            let full = self.by_name.len() >= limit
                || self.bytes.saturating_add(name.len()) > MAX_PURGED_BYTES;
            if full {
                self.by_name.clear();
                self.bytes = 0;
                self.floor = purged_at;
                self.floor_nanos = nanos;
                return;
            }
            self.bytes += name.len();
        }
        let marks = self.by_name.entry(name.into()).or_default();
        match mode {
            PurgeMode::Hard => marks.hard = purged_at,
            PurgeMode::Soft => marks.soft = purged_at,
        }
        marks.nanos = marks.nanos.max(nanos);
    }

    /// Whether a response generated at monotonic reading `generated` came before a purge of
    /// one of `names`.
    fn predates<'a>(&self, generated: u64, mut names: impl Iterator<Item = &'a str>) -> bool {
        names.any(|name| {
            self.by_name
                .get(name)
                .is_some_and(|marks| generated <= marks.nanos)
        })
    }

    /// Whether a response generated at monotonic reading `generated` came before the floor.
    fn below_floor(&self, generated: u64) -> bool {
        self.floor > 0 && generated <= self.floor_nanos
    }

    /// What the purges of `names` did to a response of `generation`.
    fn check<'a>(&self, generation: u64, names: impl IntoIterator<Item = &'a str>) -> Purged {
        if generation < self.floor {
            return Purged::Hard;
        }
        let mut verdict = Purged::No;
        for name in names {
            if let Some(marks) = self.by_name.get(name) {
                if generation < marks.hard {
                    return Purged::Hard;
                }
                if generation < marks.soft {
                    verdict = Purged::Soft;
                }
            }
        }
        if generation < self.soft_floor {
            verdict = Purged::Soft;
        }
        verdict
    }
}

#[cfg_attr(not(infra_loom), allow(unreachable_pub))]
impl PurgeLog {
    /// The generation a fetch beginning now records.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Purges `tag` for every response fetched before now (`nanos`, the monotonic reading).
    pub fn purge(&self, tag: &str, mode: PurgeMode, nanos: u64) {
        let mut log = self.tags.lock();
        // Under the log's lock, so a reader never sees the new generation without the tag.
        let purged_at = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        log.record(tag, mode, purged_at, nanos, MAX_PURGED_TAGS);
    }

    /// Soft-purges every response fetched before now, stored or still being fetched: the
    /// shared tier's subscriber lost purges it cannot name. A fetch in progress stores its
    /// answer after the purges that were lost, so marking what is stored is not enough; its
    /// generation, taken when it began, tells.
    #[cfg(feature = "redis")]
    pub(crate) fn purge_everything_soft(&self) {
        let mut log = self.tags.lock();
        // Under the log's lock, so a reader never sees the new generation without the floor.
        log.soft_floor = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
    }

    /// What the tag purges did to a response of `generation` with `tags`.
    pub fn check(&self, generation: u64, tags: &[Box<str>]) -> Purged {
        self.tags
            .lock()
            .check(generation, tags.iter().map(|tag| &**tag))
    }

    /// Purges `target` (a URL's primary key without its method) for every fetch begun before
    /// now (`nanos`, the monotonic reading), and runs `apply` (the purge of what is stored)
    /// before any fetch can store again.
    pub fn purge_url<R>(
        &self,
        target: &str,
        mode: PurgeMode,
        nanos: u64,
        apply: impl FnOnce() -> R,
    ) -> R {
        let mut log = self.urls.lock();
        let purged_at = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        log.record(target, mode, purged_at, nanos, MAX_PURGED_URLS);
        apply()
    }

    /// Whether a copy of a response under `target` with `tags`, generated at monotonic
    /// reading `generated` (now minus its age), came before a purge of its URL or one of its
    /// tags that reached this cache. A copy read from the shared tier after such a purge may
    /// have been written after the purge's delete (by an edge that had not heard of it yet),
    /// so the generation of the read, which postdates the purge, cannot tell.
    ///
    /// Past the tag log's bound every older copy counts as purged, as every older stored
    /// response does ([`PurgeLog::check`]). The URL log's floor is left out: a URL purge has
    /// already cleared the store when it is forgotten, and clients choose how many URLs their
    /// unsafe requests purge, so honouring it would let them empty the shared tier's use.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn predates_purge(&self, target: &str, tags: &[Box<str>], generated: u64) -> bool {
        let tag_log = self.tags.lock();
        if tag_log.below_floor(generated)
            || tag_log.predates(generated, tags.iter().map(|tag| &**tag))
        {
            return true;
        }
        drop(tag_log);
        self.urls
            .lock()
            .predates(generated, std::iter::once(target))
    }

    /// Runs `store` with what the purges of `target` did to a fetch begun at `generation`, with
    /// no URL purge running meanwhile.
    pub fn store_url<R>(
        &self,
        target: &str,
        generation: u64,
        store: impl FnOnce(Purged) -> R,
    ) -> R {
        let log = self.urls.lock();
        store(log.check(generation, [target]))
    }
}

/// The tags of a `Surrogate-Key` field value: space-separated, deduplicated; `None` past
/// [`MAX_TAGS_PER_RESPONSE`] tags, a tag longer than [`MAX_TAG_BYTES`], or one that is not
/// UTF-8 (no purge, which names a tag as text, could name it).
#[cfg(feature = "tokio")]
pub(crate) fn parse_tags<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<Box<str>>> {
    let mut tags: Vec<Box<str>> = Vec::new();
    for line in lines {
        for tag in line
            .split(u8::is_ascii_whitespace)
            .filter(|t| !t.is_empty())
        {
            if tag.len() > MAX_TAG_BYTES {
                return None;
            }
            let tag: Box<str> = std::str::from_utf8(tag).ok()?.into();
            if tags.contains(&tag) {
                continue;
            }
            if tags.len() == MAX_TAGS_PER_RESPONSE {
                return None;
            }
            tags.push(tag);
        }
    }
    Some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_reaches_only_older_generations_with_the_tag() {
        let log = PurgeLog::default();
        let old = log.generation();
        let tags: Vec<Box<str>> = vec!["a".into(), "b".into()];
        log.purge("b", PurgeMode::Soft, 0);
        let new = log.generation();
        assert_eq!(log.check(old, &tags), Purged::Soft);
        assert_eq!(log.check(new, &tags), Purged::No);
        assert_eq!(log.check(old, &["c".into()]), Purged::No);
        log.purge("a", PurgeMode::Hard, 0);
        assert_eq!(log.check(old, &tags), Purged::Hard);
        assert_eq!(log.check(new, &tags), Purged::Hard);
        log.purge("a", PurgeMode::Soft, 0);
        assert_eq!(
            log.check(old, &["a".into()]),
            Purged::Hard,
            "soft does not undo hard"
        );
    }

    #[test]
    fn a_soft_purge_after_a_hard_one_marks_what_the_hard_one_spared() {
        let log = PurgeLog::default();
        let tags: Vec<Box<str>> = vec!["a".into()];
        let old = log.generation();
        log.purge("a", PurgeMode::Hard, 0);
        let between = log.generation();
        log.purge("a", PurgeMode::Soft, 0);
        assert_eq!(log.check(old, &tags), Purged::Hard);
        assert_eq!(log.check(between, &tags), Purged::Soft);
        assert_eq!(log.check(log.generation(), &tags), Purged::No);

        let old = log.generation();
        log.purge_url("a.test/x", PurgeMode::Hard, 0, || ());
        let between = log.generation();
        log.purge_url("a.test/x", PurgeMode::Soft, 0, || ());
        assert_eq!(log.store_url("a.test/x", old, |p| p), Purged::Hard);
        assert_eq!(log.store_url("a.test/x", between, |p| p), Purged::Soft);
    }

    #[test]
    fn a_copy_generated_before_a_purge_predates_it() {
        let log = PurgeLog::default();
        let tags: Vec<Box<str>> = vec!["a".into()];
        log.purge("a", PurgeMode::Soft, 100);
        assert!(log.predates_purge("x.test/", &tags, 99));
        assert!(
            log.predates_purge("x.test/", &tags, 100),
            "a tie counts as before"
        );
        assert!(!log.predates_purge("x.test/", &tags, 101));
        log.purge_url("x.test/", PurgeMode::Hard, 200, || ());
        assert!(log.predates_purge("x.test/", &[], 150));
        assert!(!log.predates_purge("y.test/", &[], 150));
    }

    #[test]
    fn a_full_log_falls_back_to_a_floor() {
        let log = PurgeLog::default();
        let before = log.generation();
        for index in 0..MAX_PURGED_TAGS {
            log.purge(&format!("t{index}"), PurgeMode::Soft, 0);
        }
        let middle = log.generation();
        log.purge("one-more", PurgeMode::Soft, 0);
        assert_eq!(log.check(before, &["unrelated".into()]), Purged::Hard);
        assert_eq!(log.check(middle, &["unrelated".into()]), Purged::Hard);
        assert_eq!(
            log.check(log.generation(), &["one-more".into()]),
            Purged::No
        );
        assert!(
            log.predates_purge("x.test/", &["unrelated".into()], 0),
            "the floor's time"
        );
    }

    #[test]
    fn a_url_purge_reaches_only_older_generations_of_its_target() {
        let log = PurgeLog::default();
        let old = log.generation();
        let applied = log.purge_url("a.test/x", PurgeMode::Soft, 0, || "applied");
        assert_eq!(applied, "applied");
        let new = log.generation();
        assert_eq!(
            log.store_url("a.test/x", old, |purged| purged),
            Purged::Soft
        );
        assert_eq!(log.store_url("a.test/x", new, |purged| purged), Purged::No);
        assert_eq!(log.store_url("a.test/y", old, |purged| purged), Purged::No);
        assert_eq!(
            log.check(old, &["a.test/x".into()]),
            Purged::No,
            "not a tag"
        );
        log.purge_url("a.test/x", PurgeMode::Hard, 0, || ());
        log.purge_url("a.test/x", PurgeMode::Soft, 0, || ());
        assert_eq!(
            log.store_url("a.test/x", old, |purged| purged),
            Purged::Hard,
            "soft does not undo hard"
        );
    }

    #[test]
    fn a_full_url_log_refuses_every_older_fetch() {
        let log = PurgeLog::default();
        let before = log.generation();
        for index in 0..MAX_PURGED_URLS {
            log.purge_url(&format!("a.test/{index}"), PurgeMode::Soft, 0, || ());
        }
        log.purge_url("a.test/one-more", PurgeMode::Soft, 0, || ());
        assert_eq!(log.store_url("b.test/", before, |p| p), Purged::Hard);
        assert!(
            !log.predates_purge("b.test/", &[], 0),
            "a shared-tier copy of another URL is not refused"
        );
        assert_eq!(
            log.store_url("b.test/", log.generation(), |p| p),
            Purged::No
        );
    }

    #[test]
    fn a_url_log_of_long_urls_is_bounded_by_bytes() {
        // Unsafe requests for long URLs (which a client chooses) fill the log long before
        // MAX_PURGED_URLS of them do.
        let log = PurgeLog::default();
        let before = log.generation();
        let long = "u".repeat(1 << 20);
        for index in 0..=MAX_PURGED_BYTES >> 20 {
            log.purge_url(&format!("a.test/{index}/{long}"), PurgeMode::Hard, 0, || ());
        }
        assert_eq!(
            log.store_url("b.test/", before, |p| p),
            Purged::Hard,
            "the log fell back to a floor"
        );
        assert!(log.urls.lock().bytes <= MAX_PURGED_BYTES);
    }

    #[test]
    #[cfg(feature = "tokio")]
    fn tags_are_bounded() {
        let line = b"a  b a\tc".as_slice();
        assert_eq!(
            parse_tags([line].into_iter()),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        let many = (0..=MAX_TAGS_PER_RESPONSE)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(parse_tags([many.as_bytes()].into_iter()), None);
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        assert_eq!(parse_tags([long.as_bytes()].into_iter()), None);
    }

    #[test]
    fn a_tag_that_is_not_utf8_is_refused() {
        // No purge could name it (`purge_tag` takes text). Read lossily, each invalid byte
        // became three, so a tag within `MAX_TAG_BYTES` grew past it, and the shared tier's
        // record of the response, which holds its tags as UTF-8 within that bound, would not
        // decode on any edge.
        let mixed = b"ok \xff\xfe".as_slice();
        assert_eq!(parse_tags([mixed].into_iter()), None);
        let long = vec![0xff; MAX_TAG_BYTES];
        assert_eq!(parse_tags([long.as_slice()].into_iter()), None);
    }
}
