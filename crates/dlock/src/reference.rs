//! A reference model of a leased lock service, written from the definitions, and a driver that
//! runs the same operations on [`MemoryLocks`] and on the model and compares every answer.
//!
//! The model shares nothing with the implementation: it keeps every grant ever made in a list
//! and decides each request by scanning it.
//!
//! - A grant made at clock reading `t` with lease `d` is *live* at `now` while it was not
//!   released and `now - t < d`; an extension made at `t'` replaces `t` by `t'` and `d` by the
//!   new lease.
//! - A request is granted iff, among the live grants of its name: for a writer, there are none;
//!   for a reader, all are readers; for a semaphore of `n` permits, fewer than `n`. A request
//!   of another kind than the live grants (a semaphore beside a mutex, or another permit count)
//!   is an error.
//! - Each grant's token is greater than every token issued before for the same name.
//! - `release` and `extend` succeed iff the grant is live; `is_held` is liveness.
//! - A call made through a [`LockHandle`](crate::LockHandle) answers as the same call by
//!   name, whichever name the handle was made for, and whether or not the handle was dropped
//!   and idle names swept in between.
//!
//! Only available to tests and fuzzing (`cfg(test)` or `cfg(fuzzing)`).

use std::time::Duration;

use infra_common::ManualClock;

use crate::{Access, Error, Grant, LockHandle, Locks, MemoryLocks, Wait};

/// The longest lease, one week, in nanoseconds.
const WEEK_NANOS: u64 = 7 * 24 * 3600 * 1_000_000_000;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A mutex or the writer of a read-write lock.
    Writer,
    /// A reader of a read-write lock.
    Reader,
    /// A permit of a semaphore with this many permits (0 is invalid input).
    Permit(u32),
}

/// Which way a call goes to the locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// By name, on the [`MemoryLocks`].
    Name,
    /// Through the [`LockHandle`] of name number `n` (the same numbering as
    /// [`Op::Acquire`]'s `name`), made on first use and kept until [`Op::DropHandle`]. A
    /// handle of another name than the call's passes the call on; the empty name has no
    /// handle (making one is refused), so its calls go by name.
    Handle(u8),
}

/// One step of a scenario.
#[derive(Clone, Debug)]
pub enum Op {
    /// `try_acquire` on name number `name` (0 is the empty name, which is invalid).
    Acquire {
        /// Index into a small set of names.
        name: u8,
        /// What to ask for.
        kind: Kind,
        /// Lease in nanoseconds (0 and more than a week are invalid).
        lease: u64,
        /// By name or through a handle.
        via: Via,
    },
    /// `extend` the grant in slot `slot % slots`.
    Extend {
        /// Which held grant.
        slot: usize,
        /// New lease in nanoseconds.
        lease: u64,
        /// By name or through a handle.
        via: Via,
    },
    /// `release` the grant in slot `slot % slots`.
    Release {
        /// Which held grant.
        slot: usize,
        /// By name or through a handle.
        via: Via,
    },
    /// `release` the grant in slot `slot % slots` on another instance, which must refuse it.
    ReleaseElsewhere {
        /// Which held grant.
        slot: usize,
    },
    /// `is_held` on the grant in slot `slot % slots`.
    IsHeld {
        /// Which held grant.
        slot: usize,
        /// By name or through a handle.
        via: Via,
    },
    /// Drops the handle of name number `n % 4`, if one was made.
    DropHandle(u8),
    /// Move the clock forward.
    Advance(u64),
    /// `expire_due`, which must not change any answer.
    ExpireDue,
}

const NAMES: [&str; 4] = ["", "alpha", "beta", "gamma"];

struct ModelGrant {
    name: &'static str,
    kind: Kind,
    token: u64,
    start: u64,
    lease: u64,
    released: bool,
}

impl ModelGrant {
    fn live(&self, now: u64) -> bool {
        !self.released && now - self.start < self.lease
    }
}

/// The model's answer to a request: granted, refused, or one of these errors.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Granted,
    Busy,
    EmptyName,
    ZeroLease,
    LeaseTooLong,
    ZeroPermits,
    KindMismatch,
}

fn kinds_agree(a: Kind, b: Kind) -> bool {
    match (a, b) {
        (Kind::Permit(x), Kind::Permit(y)) => x == y,
        (Kind::Permit(_), _) | (_, Kind::Permit(_)) => false,
        _ => true,
    }
}

fn verdict(grants: &[ModelGrant], name: &str, kind: Kind, lease: u64, now: u64) -> Verdict {
    if name.is_empty() {
        return Verdict::EmptyName;
    }
    if lease == 0 {
        return Verdict::ZeroLease;
    }
    if lease > WEEK_NANOS {
        return Verdict::LeaseTooLong;
    }
    if kind == Kind::Permit(0) {
        return Verdict::ZeroPermits;
    }
    let live: Vec<&ModelGrant> = grants
        .iter()
        .filter(|g| g.name == name && g.live(now))
        .collect();
    if live.iter().any(|g| !kinds_agree(g.kind, kind)) {
        return Verdict::KindMismatch;
    }
    let free = match kind {
        Kind::Writer => live.is_empty(),
        Kind::Reader => live.iter().all(|g| g.kind == Kind::Reader),
        Kind::Permit(n) => live.len() < n as usize,
    };
    if free {
        Verdict::Granted
    } else {
        Verdict::Busy
    }
}

/// The handles a run has made, by name number.
struct Handles<'a> {
    locks: &'a MemoryLocks<ManualClock>,
    made: [Option<LockHandle<'a, ManualClock>>; NAMES.len()],
}

impl<'a> Handles<'a> {
    /// The handle `via` names, made if missing; `Ok(None)` for a call by name, or through
    /// the empty name's handle (refused, as it must be).
    fn get(&mut self, via: Via) -> Result<Option<&LockHandle<'a, ManualClock>>, String> {
        let Via::Handle(n) = via else {
            return Ok(None);
        };
        let index = usize::from(n) % NAMES.len();
        if self.made[index].is_none() {
            match self.locks.handle(NAMES[index]) {
                Ok(handle) => self.made[index] = Some(handle),
                Err(Error::EmptyName) if NAMES[index].is_empty() => return Ok(None),
                other => return Err(format!("handle of {:?}: {other:?}", NAMES[index])),
            }
        }
        Ok(self.made[index].as_ref())
    }
}

fn lease_error(lease: u64) -> Option<Error> {
    match lease {
        0 => Some(Error::ZeroLease),
        l if l > WEEK_NANOS => Some(Error::LeaseTooLong {
            lease: Duration::from_nanos(l),
            max: Duration::from_nanos(WEEK_NANOS),
        }),
        _ => None,
    }
}

/// Runs `ops` against a fresh [`MemoryLocks`] on a manual clock and against the model.
///
/// # Errors
///
/// The first disagreement, described.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let elsewhere = MemoryLocks::with_clock(clock.clone());
    let mut handles = Handles {
        locks: &locks,
        made: [None, None, None, None],
    };
    let mut now = 0u64;
    let mut model: Vec<ModelGrant> = Vec::new();
    // Grants still in the caller's hands, each with its index in `model`.
    let mut held: Vec<(Grant, usize)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let fail = |what: String| Err(format!("step {step} {op:?}: {what}"));
        match *op {
            Op::Acquire {
                name,
                kind,
                lease,
                via,
            } => {
                let name = NAMES[usize::from(name) % NAMES.len()];
                let access = match kind {
                    Kind::Writer => Access::Exclusive,
                    Kind::Reader => Access::Shared,
                    Kind::Permit(permits) => Access::Permit { permits },
                };
                let expected = verdict(&model, name, kind, lease, now);
                let lease_for = Duration::from_nanos(lease);
                let got = match handles.get(via) {
                    Ok(Some(handle)) => handle.grant(name, access, lease_for, Wait::No),
                    Ok(None) => locks.grant(name, access, lease_for, Wait::No),
                    Err(what) => return fail(what),
                };
                let got_verdict = match &got {
                    Ok(Some(_)) => Verdict::Granted,
                    Ok(None) => Verdict::Busy,
                    Err(Error::EmptyName) => Verdict::EmptyName,
                    Err(Error::ZeroLease) => Verdict::ZeroLease,
                    Err(Error::LeaseTooLong { .. }) => Verdict::LeaseTooLong,
                    Err(Error::ZeroPermits) => Verdict::ZeroPermits,
                    Err(Error::KindMismatch { .. }) => Verdict::KindMismatch,
                    Err(other) => return fail(format!("unexpected error {other:?}")),
                };
                if got_verdict != expected {
                    return fail(format!("model says {expected:?}, locks said {got:?}"));
                }
                if let Ok(Some(grant)) = got {
                    let token = grant.token().get();
                    let previous = model.iter().filter(|g| g.name == name).map(|g| g.token);
                    if let Some(max) = previous.max().filter(|&max| token <= max) {
                        return fail(format!("token {token} after token {max}"));
                    }
                    if grant.granted_at_nanos() != now
                        || grant.deadline_nanos() != now + lease
                        || grant.access() != access
                        || grant.name() != name
                    {
                        return fail(format!("grant {grant:?} at {now}"));
                    }
                    model.push(ModelGrant {
                        name,
                        kind,
                        token,
                        start: now,
                        lease,
                        released: false,
                    });
                    held.push((grant, model.len() - 1));
                }
            }
            Op::Extend { slot, lease, via } => {
                if held.is_empty() {
                    continue;
                }
                let slot = slot % held.len();
                let (grant, index) = &mut held[slot];
                let lease_for = Duration::from_nanos(lease);
                let got = match handles.get(via) {
                    Ok(Some(handle)) => handle.extend(grant, lease_for),
                    Ok(None) => locks.extend(grant, lease_for),
                    Err(what) => return fail(what),
                };
                let expected = match lease_error(lease) {
                    Some(error) => Err(error),
                    None if model[*index].live(now) => Ok(()),
                    None => Err(Error::LeaseExpired {
                        name: model[*index].name.to_owned(),
                        token: grant.token(),
                    }),
                };
                if got != expected {
                    return fail(format!("expected {expected:?}, got {got:?}"));
                }
                if got.is_ok() {
                    model[*index].start = now;
                    model[*index].lease = lease;
                    if grant.deadline_nanos() != now + lease {
                        return fail(format!("extended grant {grant:?} at {now}"));
                    }
                }
            }
            Op::Release { slot, via } => {
                if held.is_empty() {
                    continue;
                }
                let (grant, index) = held.remove(slot % held.len());
                let expected = if model[index].live(now) {
                    Ok(())
                } else {
                    Err(Error::LeaseExpired {
                        name: model[index].name.to_owned(),
                        token: grant.token(),
                    })
                };
                let got = match handles.get(via) {
                    Ok(Some(handle)) => handle.release(grant),
                    Ok(None) => locks.release(grant),
                    Err(what) => return fail(what),
                };
                if got != expected {
                    return fail(format!("expected {expected:?}, got {got:?}"));
                }
                model[index].released = true;
            }
            Op::ReleaseElsewhere { slot } => {
                if held.is_empty() {
                    continue;
                }
                let (grant, _) = held.remove(slot % held.len());
                let token = grant.token();
                let got = elsewhere.release(grant);
                // The grant is gone from the caller's hands but stays live in the model.
                if !matches!(got, Err(Error::ForeignGrant { token: t, .. }) if t == token) {
                    return fail(format!("another instance answered {got:?}"));
                }
            }
            Op::IsHeld { slot, via } => {
                if held.is_empty() {
                    continue;
                }
                let (grant, index) = &held[slot % held.len()];
                let got = match handles.get(via) {
                    Ok(Some(handle)) => handle.is_held(grant),
                    Ok(None) => locks.is_held(grant),
                    Err(what) => return fail(what),
                };
                let expected = model[*index].live(now);
                if got != expected {
                    return fail(format!("model says held={expected}, locks said {got}"));
                }
            }
            Op::Advance(by) => {
                now = now.saturating_add(by);
                clock.advance(Duration::from_nanos(by));
            }
            Op::ExpireDue => {
                locks.expire_due();
            }
            Op::DropHandle(n) => {
                handles.made[usize::from(n) % NAMES.len()] = None;
            }
        }
    }
    Ok(())
}

// `prop_oneof!` builds its weighted union on `std::sync::Arc`, outside any concurrency we model.
#[allow(clippy::disallowed_types)]
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            3 => Just(Kind::Writer),
            2 => Just(Kind::Reader),
            2 => (0u32..4).prop_map(Kind::Permit),
        ]
    }

    fn lease() -> impl Strategy<Value = u64> {
        prop_oneof![
            8 => 1u64..50,
            1 => Just(0u64),
            1 => Just(WEEK_NANOS),
            1 => Just(WEEK_NANOS + 1),
        ]
    }

    fn via() -> impl Strategy<Value = Via> {
        prop_oneof![
            2 => Just(Via::Name),
            3 => (0u8..4).prop_map(Via::Handle),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4, kind(), lease(), via()).prop_map(|(name, kind, lease, via)| Op::Acquire { name, kind, lease, via }),
            2 => (any::<usize>(), lease(), via()).prop_map(|(slot, lease, via)| Op::Extend { slot, lease, via }),
            3 => (any::<usize>(), via()).prop_map(|(slot, via)| Op::Release { slot, via }),
            1 => any::<usize>().prop_map(|slot| Op::ReleaseElsewhere { slot }),
            2 => (any::<usize>(), via()).prop_map(|(slot, via)| Op::IsHeld { slot, via }),
            3 => (0u64..30).prop_map(Op::Advance),
            1 => Just(Op::ExpireDue),
            1 => (0u8..4).prop_map(Op::DropHandle),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn memory_locks_agree_with_the_model(ops in proptest::collection::vec(op(), 0..80)) {
            if let Err(disagreement) = run(&ops) {
                prop_assert!(false, "{}", disagreement);
            }
        }
    }

    #[test]
    fn the_model_decides_from_the_definition() {
        // A hand-written scenario (the second writer, through the name's handle, is refused,
        // a reader gets in through another name's handle once the first lease ends, releasing
        // the expired grant through a handle made after a sweep is an error) and the model's
        // verdicts on their own.
        let ops = [
            Op::Acquire {
                name: 1,
                kind: Kind::Writer,
                lease: 10,
                via: Via::Name,
            },
            Op::Acquire {
                name: 1,
                kind: Kind::Writer,
                lease: 10,
                via: Via::Handle(1),
            },
            Op::Advance(10),
            Op::Acquire {
                name: 1,
                kind: Kind::Reader,
                lease: 10,
                via: Via::Handle(2),
            },
            Op::IsHeld {
                slot: 0,
                via: Via::Handle(1),
            },
            Op::DropHandle(1),
            Op::ExpireDue,
            Op::Release {
                slot: 0,
                via: Via::Handle(1),
            },
            Op::Acquire {
                name: 2,
                kind: Kind::Writer,
                lease: 10,
                via: Via::Handle(0),
            },
        ];
        run(&ops).unwrap();
        let mut grants = Vec::new();
        assert_eq!(
            verdict(&grants, "alpha", Kind::Writer, 10, 0),
            Verdict::Granted
        );
        grants.push(ModelGrant {
            name: "alpha",
            kind: Kind::Writer,
            token: 1,
            start: 0,
            lease: 10,
            released: false,
        });
        assert_eq!(
            verdict(&grants, "alpha", Kind::Reader, 10, 9),
            Verdict::Busy
        );
        assert_eq!(
            verdict(&grants, "alpha", Kind::Permit(2), 10, 9),
            Verdict::KindMismatch
        );
        assert_eq!(
            verdict(&grants, "alpha", Kind::Reader, 10, 10),
            Verdict::Granted
        );
    }
}
