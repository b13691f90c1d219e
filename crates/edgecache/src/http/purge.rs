//! Purge by surrogate key (tag): a log of purged tags, checked when a stored response is read.
//!
//! Each stored response records the *generation* at which its fetch began and its tags (the
//! `Surrogate-Key` response field, space separated). Purging a tag advances the generation and
//! records it against the tag; a stored response with that tag and an older generation is then
//! purged: gone (hard) or stale (soft). Taking the generation when the fetch *begins* means a
//! response fetched before a purge and stored after it is still purged.
//!
//! The log is bounded: past [`MAX_PURGED_TAGS`] tags it is cleared and replaced by a floor,
//! under which every stored response counts as hard-purged. That empties the cache's reuse of
//! everything older, which is safe (a purge is never missed) and rare.

use std::collections::HashMap;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// The most tags the purge log remembers before it falls back to purging everything older.
pub const MAX_PURGED_TAGS: usize = 100_000;

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

/// The state of a stored response after the purges since its fetch began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purged {
    No,
    Soft,
    Hard,
}

/// The generation counter and the purged tags.
#[derive(Debug, Default)]
pub(crate) struct PurgeLog {
    generation: AtomicU64,
    tags: Mutex<TagLog>,
}

#[derive(Debug, Default)]
struct TagLog {
    by_tag: HashMap<Box<str>, (u64, PurgeMode)>,
    /// Responses from generations below this are hard-purged.
    floor: u64,
}

impl PurgeLog {
    /// The generation a fetch beginning now records.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Purges `tag` for every response fetched before now.
    pub(crate) fn purge(&self, tag: &str, mode: PurgeMode) {
        let mut log = self.tags.lock();
        // Under the log's lock, so a reader never sees the new generation without the tag.
        let purged_at = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if log.by_tag.len() >= MAX_PURGED_TAGS && !log.by_tag.contains_key(tag) {
            log.by_tag.clear();
            log.floor = purged_at;
            return;
        }
        let entry = log.by_tag.entry(tag.into()).or_insert((0, PurgeMode::Soft));
        // A soft purge after a hard one does not soften it for older responses.
        let mode = if entry.0 > 0 { entry.1.max(mode) } else { mode };
        *entry = (purged_at, mode);
    }

    /// What the purges did to a response of `generation` with `tags`.
    pub(crate) fn check(&self, generation: u64, tags: &[Box<str>]) -> Purged {
        let log = self.tags.lock();
        if generation < log.floor {
            return Purged::Hard;
        }
        let mut verdict = Purged::No;
        for tag in tags {
            if let Some(&(purged_at, mode)) = log.by_tag.get(tag)
                && generation < purged_at
            {
                match mode {
                    PurgeMode::Hard => return Purged::Hard,
                    PurgeMode::Soft => verdict = Purged::Soft,
                }
            }
        }
        verdict
    }
}

/// The tags of a `Surrogate-Key` field value: space-separated, deduplicated; `None` past
/// [`MAX_TAGS_PER_RESPONSE`] tags or a tag longer than [`MAX_TAG_BYTES`].
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
            let tag: Box<str> = String::from_utf8_lossy(tag).into();
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
        log.purge("b", PurgeMode::Soft);
        let new = log.generation();
        assert_eq!(log.check(old, &tags), Purged::Soft);
        assert_eq!(log.check(new, &tags), Purged::No);
        assert_eq!(log.check(old, &["c".into()]), Purged::No);
        log.purge("a", PurgeMode::Hard);
        assert_eq!(log.check(old, &tags), Purged::Hard);
        assert_eq!(log.check(new, &tags), Purged::Hard);
        log.purge("a", PurgeMode::Soft);
        assert_eq!(
            log.check(old, &["a".into()]),
            Purged::Hard,
            "soft does not undo hard"
        );
    }

    #[test]
    fn a_full_log_falls_back_to_a_floor() {
        let log = PurgeLog::default();
        let before = log.generation();
        for index in 0..MAX_PURGED_TAGS {
            log.purge(&format!("t{index}"), PurgeMode::Soft);
        }
        let middle = log.generation();
        log.purge("one-more", PurgeMode::Soft);
        assert_eq!(log.check(before, &["unrelated".into()]), Purged::Hard);
        assert_eq!(log.check(middle, &["unrelated".into()]), Purged::Hard);
        assert_eq!(
            log.check(log.generation(), &["one-more".into()]),
            Purged::No
        );
    }

    #[test]
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
}
