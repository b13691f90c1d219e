//! Where one user key's state lives in Redis, and why all of it lands on one cluster slot.
//!
//! Redis Cluster places a key by its *hash tag*: the text between the first `{` and the first
//! `}` after it, if that text is not empty; otherwise by the whole key. A script may only
//! touch keys of one slot, so every Redis key a check uses for one user key must carry the same
//! non-empty tag, whatever bytes the user key holds. The rule:
//!
//! - the tag is the user key with `%`, `{` and `}` written as `%25`, `%7B` and `%7D`, and the
//!   empty key's tag is `%` (which no other key produces, since a `%` is always escaped): never
//!   empty, never a brace, and distinct user keys get distinct tags;
//! - every Redis key of one user key is `<prefix>:{<tag>}` followed by a suffix: the state
//!   (`<prefix>:{<tag>}`), the sliding log's cell counter (`…:seq`), and one short-lived record
//!   per admitted request for retries (`…:req:<token>`);
//! - the prefix may not contain a brace (checked when the limiter is built), so the first `{`
//!   of every key is the one opening the tag.
//!
//! So a user key always hashes on its own tag: the same slot for all its keys, in every process.

use super::options::RemoteAlgorithm;

/// Builds the Redis keys of a limiter's user keys under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// Keys under `prefix`, which must contain no brace (see [`RedisOptions::validate`]).
    ///
    /// [`RedisOptions::validate`]: super::options::RedisOptions::validate
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys one check of `key` passes to the script, in the script's order: the state
    /// (and, for the log, its counter), then the record of request `token`.
    pub(crate) fn script_keys(
        &self,
        algorithm: RemoteAlgorithm,
        key: &str,
        token: &str,
    ) -> Vec<String> {
        let state = self.state(key);
        let record = format!("{state}:req:{token}");
        match algorithm {
            RemoteAlgorithm::SlidingWindowLog => {
                let counter = format!("{state}:seq");
                vec![state, counter, record]
            }
            RemoteAlgorithm::Gcra => vec![state, record],
        }
    }

    /// The key holding `key`'s state: `<prefix>:{<tag>}`.
    pub(crate) fn state(&self, key: &str) -> String {
        let mut state = String::with_capacity(self.prefix.len() + key.len() + 4);
        state.push_str(&self.prefix);
        state.push_str(":{");
        push_tag(&mut state, key);
        state.push('}');
        state
    }

    /// The Redis Cluster slot every Redis key of `key` hashes to: that of its tag.
    pub(crate) fn slot(key: &str) -> u16 {
        let mut tag = String::with_capacity(key.len() + 1);
        push_tag(&mut tag, key);
        crc16_xmodem(tag.as_bytes()) % CLUSTER_SLOTS
    }
}

/// How many slots Redis Cluster divides keys into.
pub(crate) const CLUSTER_SLOTS: u16 = 16_384;

/// The checksum Redis Cluster hashes keys with (CRC-16/XMODEM: polynomial 0x1021, initial
/// value 0, no reflection), a bit at a time: it runs once per check of a cluster, on a short
/// tag, where a table would only cost memory.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

/// Appends `key`'s hash tag: the key with `%`, `{` and `}` percent-escaped, `%` if empty.
fn push_tag(out: &mut String, key: &str) {
    if key.is_empty() {
        out.push('%');
        return;
    }
    for c in key.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Redis Cluster's rule, written from its specification: the text between the first `{`
    /// and the first `}` after it if non-empty, else the whole key.
    fn hashed_part(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(length) = key[open + 1..].find('}')
            && length > 0
        {
            return &key[open + 1..open + 1 + length];
        }
        key
    }

    #[test]
    fn awkward_keys_get_a_tag_of_their_own() {
        let layout = KeyLayout::new("rl");
        let cases = [
            ("", "rl:{%}"),
            ("user:42", "rl:{user:42}"),
            ("}x", "rl:{%7Dx}"),
            ("{a}", "rl:{%7Ba%7D}"),
            ("50%", "rl:{50%25}"),
            ("%", "rl:{%25}"),
        ];
        for (key, state) in cases {
            assert_eq!(layout.state(key), state, "{key:?}");
        }
    }

    #[test]
    fn slots_are_redis_clusters() {
        // The checksum's published check value, and `CLUSTER KEYSLOT foo` from Redis's docs.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(crc16_xmodem(b"foo") % CLUSTER_SLOTS, 12_182);
        // A user key is placed by its tag, escaped braces included.
        assert_eq!(
            KeyLayout::slot("{a}"),
            crc16_xmodem(b"%7Ba%7D") % CLUSTER_SLOTS
        );
        assert_eq!(KeyLayout::slot(""), crc16_xmodem(b"%") % CLUSTER_SLOTS);
    }

    proptest! {
        #[test]
        fn every_key_of_a_user_key_hashes_on_one_nonempty_tag(
            key in ".{0,12}|[{}%a]{0,8}",
            other in ".{0,12}|[{}%a]{0,8}",
            token in "[0-9a-f]{1,20}",
        ) {
            let layout = KeyLayout::new("ratelimit");
            for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
                let keys = layout.script_keys(algorithm, &key, &token);
                let tag = hashed_part(&keys[0]);
                prop_assert!(!tag.is_empty() && tag != keys[0], "{keys:?} hash on a tag");
                prop_assert!(!tag.contains(['{', '}']), "{tag:?} has a brace");
                for redis_key in &keys {
                    prop_assert_eq!(hashed_part(redis_key), tag, "{:?}", keys);
                }
                if other != key {
                    let others = layout.script_keys(algorithm, &other, &token);
                    prop_assert_ne!(hashed_part(&others[0]), tag);
                }
            }
        }
    }
}
