//! The store's reference model, shared by `tests/store.rs` and the `edgecache_store_ops` fuzz
//! target: the last value written to each key, its weight and its expiry, on a clock of whole
//! ticks. It shares no code with the store; it only knows what a cache may answer.
//!
//! A store may forget an entry at any time (its policy evicts), so a key leaves the model when
//! the store shows it gone, and must stay gone until it is written again: an eviction never
//! brings a value back.

use std::collections::HashMap;

/// What the model remembers of a key: the last value written, its weight (a weight of 0
/// counts as 1), and its expiry in ticks.
#[derive(Debug, Clone, Copy)]
struct Written {
    value: u32,
    weight: u64,
    expires: Option<u64>,
}

/// The keys whose last write may still be in the store, and the current tick.
#[derive(Debug, Default)]
pub(crate) struct Model {
    written: HashMap<u8, Written>,
    now: u64,
}

impl Model {
    /// Records a write of `value` weighing `weight`, expiring `ttl` ticks from now if given.
    pub(crate) fn insert(&mut self, key: u8, value: u32, weight: u32, ttl: Option<u64>) {
        let written = Written {
            value,
            weight: u64::from(weight.max(1)),
            expires: ttl.map(|ticks| self.now + ticks),
        };
        self.written.insert(key, written);
    }

    /// Moves the clock `ticks` on.
    pub(crate) fn advance(&mut self, ticks: u64) {
        self.now += ticks;
    }

    fn live(&self, written: &Written) -> bool {
        written.expires.is_none_or(|at| self.now < at)
    }

    /// Checks what a lookup of `key` returned: the last value written and not expired, or
    /// nothing (after which the key is forgotten).
    pub(crate) fn looked_up(&mut self, key: u8, got: Option<u32>) -> Result<(), String> {
        match (got, self.written.get(&key)) {
            (Some(value), Some(written)) if value != written.value => {
                Err(format!("{key} returned {value}, not {}", written.value))
            }
            (Some(_), Some(written)) if !self.live(written) => {
                Err(format!("{key} returned an expired value"))
            }
            (Some(value), None) => Err(format!("{key} returned {value}, never written or gone")),
            (Some(_), Some(_)) => Ok(()),
            (None, _) => {
                self.written.remove(&key);
                Ok(())
            }
        }
    }

    /// Checks what a removal of `key` returned, and forgets the key.
    pub(crate) fn removed(&mut self, key: u8, removed: Option<u32>) -> Result<(), String> {
        let written = self.written.remove(&key);
        match (removed, written) {
            (None, _) => Ok(()),
            (Some(value), None) => Err(format!("{key} removed {value}, never written or gone")),
            (Some(value), Some(written)) if value != written.value => {
                Err(format!("{key} removed {value}, not {}", written.value))
            }
            (Some(_), Some(written)) if !self.live(&written) => {
                Err(format!("{key} removed an expired value"))
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// The entries and total weight the store must hold once expired entries are purged,
    /// given what `peek` shows for each key the model still knows (each shown value must be
    /// the last written).
    pub(crate) fn held(&self, peek: impl Fn(u8) -> Option<u32>) -> Result<(usize, u64), String> {
        let (mut entries, mut weight) = (0, 0);
        for (&key, written) in &self.written {
            if let Some(value) = peek(key) {
                if value != written.value {
                    return Err(format!("{key} shows {value}, not {}", written.value));
                }
                entries += 1;
                weight += written.weight;
            }
        }
        Ok((entries, weight))
    }
}
