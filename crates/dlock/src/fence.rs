//! The resource's side of fencing: refuse a write that carries an older token.

use std::collections::HashMap;
use std::fmt;

use infra_common::RandomState;
use infra_common::sync::Mutex;

use crate::error::Error;
use crate::grant::{FencingToken, MAX_NAME_LEN, check_name};

/// Remembers, per resource, the highest fencing token admitted for a write, the highest
/// checked for a read, and the lock they came from.
///
/// A lock alone cannot stop a holder that paused past its lease from writing: it wakes up
/// still believing it holds the lock. The resource must check. [`Fence::admit`] admits a token
/// at least as high as every token admitted before for that resource (the same holder writes
/// many times under one grant) and raises the mark, in one atomic step; an older token is
/// refused with [`Error::StaleToken`]. A write is also refused below the highest token a
/// reader presented to [`Fence::check`]: a writer whose lease ran out while readers were
/// granted must not write during their shared hold. The first token admitted or checked for a
/// resource binds it to that token's lock; a token of another lock is refused with
/// [`Error::WrongLock`], since tokens of different locks are not comparable. Token 0 is never
/// issued and is refused with [`Error::ZeroToken`]; an empty resource name with
/// [`Error::EmptyResource`], one longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes with
/// [`Error::ResourceTooLong`]. A fence keeps a mark for every resource it has seen, for its
/// whole life (forgetting one would admit a stale token there again).
///
/// A fence tells locks apart **by name only**. It must see, for each lock name, the tokens of
/// one lock service: one [`MemoryLocks`](crate::MemoryLocks) instance, or one Redis or etcd
/// deployment under one key prefix. Two services that both lock `account-7` each issue their
/// own growing tokens, and the fence cannot tell a token of one from a token of the other: it
/// would compare them as if they were of one lock.
///
/// The check must be atomic with the write it guards: admit inside the storage's own critical
/// section (or transaction), so that no newer writer can slip in between the check and the
/// write.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_common::sync::Mutex;
/// use infra_dlock::{Error, Fence, FencingToken, Locks, MemoryLocks};
/// use std::time::Duration;
///
/// /// A store whose writes carry the writer's lock name and token.
/// struct Store {
///     fence: Fence,
///     balance: Mutex<i64>,
/// }
///
/// impl Store {
///     fn write(&self, lock: &str, token: FencingToken, value: i64) -> Result<(), Error> {
///         let mut balance = self.balance.lock();
///         self.fence.admit("balance", lock, token)?; // under the store's lock
///         *balance = value;
///         Ok(())
///     }
/// }
///
/// let clock = ManualClock::new();
/// let locks = MemoryLocks::with_clock(clock.clone());
/// let store = Store { fence: Fence::new(), balance: Mutex::new(1000) };
/// let lease = Duration::from_secs(5);
///
/// let paused = locks.acquire("account-7", lease)?.into_grant();
/// clock.advance(Duration::from_secs(6)); // the holder stalls past its lease
/// let next = locks.acquire("account-7", lease)?;
/// store.write("account-7", next.token(), 800)?;
///
/// // The first holder wakes up and writes what it computed before the pause.
/// let refused = store.write("account-7", paused.token(), 900);
/// assert!(matches!(refused, Err(Error::StaleToken { .. })));
/// assert_eq!(*store.balance.lock(), 800);
/// # Ok::<(), Error>(())
/// ```
pub struct Fence {
    marks: Mutex<HashMap<Box<str>, Mark, RandomState>>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::FenceCounters,
}

struct Mark {
    lock: Box<str>,
    /// The highest token admitted for a write; readers below it are refused.
    highest: Option<FencingToken>,
    /// The highest token checked for a read; writers below it are refused.
    highest_read: Option<FencingToken>,
}

impl Mark {
    /// The lowest token a write may carry: no write may come from a grant older than the last
    /// write or the last read.
    fn write_floor(&self) -> Option<FencingToken> {
        self.highest.max(self.highest_read)
    }
}

/// Refuses the inputs no lock service issues: token 0, an empty resource, a bad lock name.
fn check_input(resource: &str, lock: &str, token: FencingToken) -> Result<(), Error> {
    check_name(lock)?;
    if resource.is_empty() {
        return Err(Error::EmptyResource);
    }
    if resource.len() > MAX_NAME_LEN {
        return Err(Error::ResourceTooLong {
            len: resource.len(),
            max: MAX_NAME_LEN,
        });
    }
    if token.get() == 0 {
        return Err(Error::ZeroToken);
    }
    Ok(())
}

impl Fence {
    /// A fence that has admitted nothing.
    pub fn new() -> Self {
        Self {
            marks: Mutex::new(HashMap::default()),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::FenceCounters::unnamed(),
        }
    }

    /// Reports this fence's refusals under `name` (the `fence` label) instead of `default`.
    /// See the [`metrics`](crate::metrics) module: install the recorder first.
    #[cfg(feature = "metrics")]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::FenceCounters::new(name.into());
        self
    }

    /// Admits a write to `resource` under `token` of lock `lock`, or refuses it.
    ///
    /// # Errors
    ///
    /// [`Error::StaleToken`] if a higher token of the lock was admitted for `resource`, or
    /// checked for a read of it; [`Error::WrongLock`] if `resource` is guarded by another lock;
    /// [`Error::ZeroToken`] for token 0; [`Error::EmptyResource`] or
    /// [`Error::ResourceTooLong`] for a bad `resource`;
    /// [`Error::EmptyName`] or [`Error::NameTooLong`] for a bad `lock`.
    pub fn admit(&self, resource: &str, lock: &str, token: FencingToken) -> Result<(), Error> {
        check_input(resource, lock, token)?;
        let mut marks = self.marks.lock();
        let admitted = match marks.get_mut(resource) {
            Some(mark) if *mark.lock != *lock => Err(Error::WrongLock {
                resource: resource.to_owned(),
                expected: mark.lock.to_string(),
                got: lock.to_owned(),
            }),
            Some(mark) => match mark.write_floor() {
                Some(floor) if token < floor => Err(Error::StaleToken {
                    resource: resource.to_owned(),
                    token,
                    highest: floor,
                }),
                _ => {
                    mark.highest = Some(token);
                    Ok(())
                }
            },
            None => {
                let mark = Mark {
                    lock: lock.into(),
                    highest: Some(token),
                    highest_read: None,
                };
                marks.insert(resource.into(), mark);
                Ok(())
            }
        };
        #[cfg(feature = "metrics")]
        self.metrics.record(&admitted);
        admitted
    }

    /// Checks a read of `resource` under `token` of lock `lock`: for the readers of a
    /// read-write lock.
    ///
    /// A reader's token must not go through [`Fence::admit`]: it would raise the write mark and
    /// refuse the other readers' older tokens. Checking instead refuses a reader whose grant
    /// is older than the last write admitted (a reader that stalled past its lease while a
    /// writer was granted and wrote), and lets readers granted after it read in any order. It
    /// raises the read mark, so that a writer whose grant is older than a reader's (a writer
    /// that stalled past its lease while the readers were granted) is refused by
    /// [`Fence::admit`]. The first check binds the resource to `lock`.
    ///
    /// # Errors
    ///
    /// [`Error::StaleToken`] for a token below the last write admitted, and otherwise as
    /// [`Fence::admit`].
    pub fn check(&self, resource: &str, lock: &str, token: FencingToken) -> Result<(), Error> {
        check_input(resource, lock, token)?;
        let mut marks = self.marks.lock();
        let checked = match marks.get_mut(resource) {
            Some(mark) if *mark.lock != *lock => Err(Error::WrongLock {
                resource: resource.to_owned(),
                expected: mark.lock.to_string(),
                got: lock.to_owned(),
            }),
            Some(mark) => match mark.highest {
                Some(highest) if token < highest => Err(Error::StaleToken {
                    resource: resource.to_owned(),
                    token,
                    highest,
                }),
                _ => {
                    mark.highest_read = mark.highest_read.max(Some(token));
                    Ok(())
                }
            },
            None => {
                let mark = Mark {
                    lock: lock.into(),
                    highest: None,
                    highest_read: Some(token),
                };
                marks.insert(resource.into(), mark);
                Ok(())
            }
        };
        #[cfg(feature = "metrics")]
        self.metrics.record(&checked);
        checked
    }

    /// The highest token admitted for a write to `resource`, if any.
    pub fn highest(&self, resource: &str) -> Option<FencingToken> {
        self.marks
            .lock()
            .get(resource)
            .and_then(|mark| mark.highest)
    }

    /// The highest token checked for a read of `resource`, if any.
    pub fn highest_read(&self, resource: &str) -> Option<FencingToken> {
        self.marks
            .lock()
            .get(resource)
            .and_then(|mark| mark.highest_read)
    }
}

impl Default for Fence {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("resources", &self.marks.lock().len())
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    fn t(value: u64) -> FencingToken {
        FencingToken::new(value)
    }

    #[test]
    fn admits_equal_and_higher_tokens_and_refuses_older_ones() {
        let fence = Fence::new();
        assert_eq!(fence.highest("r"), None);
        fence.admit("r", "lock", t(5)).unwrap();
        fence.admit("r", "lock", t(5)).unwrap();
        fence.admit("r", "lock", t(9)).unwrap();
        assert_eq!(
            fence.admit("r", "lock", t(8)),
            Err(Error::StaleToken {
                resource: "r".into(),
                token: t(8),
                highest: t(9)
            })
        );
        assert_eq!(fence.highest("r"), Some(t(9)));
        // Resources are independent.
        fence.admit("other", "lock", t(1)).unwrap();
        assert_eq!(fence.highest("other"), Some(t(1)));
    }

    #[test]
    fn a_check_refuses_tokens_below_the_write_mark_and_raises_only_the_read_mark() {
        let fence = Fence::new();
        // Readers 3 and 4 read before any write; the write mark does not move.
        fence.check("r", "lock", t(4)).unwrap();
        fence.check("r", "lock", t(3)).unwrap();
        assert_eq!(fence.highest("r"), None);
        assert_eq!(fence.highest_read("r"), Some(t(4)));
        // The writer (5) writes; reader 3, stalled past its lease, reads afterwards: refused.
        fence.admit("r", "lock", t(5)).unwrap();
        assert_eq!(
            fence.check("r", "lock", t(3)),
            Err(Error::StaleToken {
                resource: "r".into(),
                token: t(3),
                highest: t(5)
            })
        );
        // Readers granted after the writer read in any order, without raising the mark.
        fence.check("r", "lock", t(7)).unwrap();
        fence.check("r", "lock", t(6)).unwrap();
        assert_eq!(fence.highest("r"), Some(t(5)));
        assert!(matches!(
            fence.check("r", "other", t(9)),
            Err(Error::WrongLock { .. })
        ));
        assert_eq!(fence.check("r", "", t(9)), Err(Error::EmptyName));
    }

    #[test]
    fn refuses_tokens_of_another_lock_and_bad_lock_names() {
        let fence = Fence::new();
        fence.admit("r", "a", t(1)).unwrap();
        assert_eq!(
            fence.admit("r", "b", t(100)),
            Err(Error::WrongLock {
                resource: "r".into(),
                expected: "a".into(),
                got: "b".into()
            })
        );
        assert_eq!(fence.highest("r"), Some(t(1)));
        assert_eq!(fence.admit("r", "", t(2)), Err(Error::EmptyName));
    }

    #[test]
    fn a_writer_older_than_a_checked_reader_is_refused() {
        let fence = Fence::new();
        fence.admit("r", "lock", t(1)).unwrap();
        // Writer 1 stalls past its lease; reader 2 is granted and reads.
        fence.check("r", "lock", t(2)).unwrap();
        assert_eq!(
            fence.admit("r", "lock", t(1)),
            Err(Error::StaleToken {
                resource: "r".into(),
                token: t(1),
                highest: t(2)
            })
        );
        // A writer granted after the reader writes.
        fence.admit("r", "lock", t(3)).unwrap();
        assert_eq!(fence.highest("r"), Some(t(3)));
    }

    #[test]
    fn token_zero_and_an_empty_resource_are_refused() {
        let fence = Fence::new();
        assert_eq!(fence.admit("r", "lock", t(0)), Err(Error::ZeroToken));
        assert_eq!(fence.check("r", "lock", t(0)), Err(Error::ZeroToken));
        assert_eq!(fence.admit("", "lock", t(1)), Err(Error::EmptyResource));
        assert_eq!(fence.check("", "lock", t(1)), Err(Error::EmptyResource));
        assert_eq!(fence.highest(""), None);
        assert_eq!(fence.highest("r"), None);
    }
}
