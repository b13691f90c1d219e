//! Arbitrary sequences of acquire (writer, reader or semaphore permit, on four names one of
//! which is empty), extend, release, release on another instance, is-held, clock advances and
//! expiry sweeps on the in-process backend agree step by step with the crate's reference model
//! of leased locks: granted or not, which error, strictly growing tokens per name, and the lease
//! running from the moment of the grant or extension. Acquire, extend, release and is-held go
//! by name or through a `LockHandle` (of the call's name or another), and handles are dropped
//! and made again between sweeps.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_dlock::reference::{Kind, Op, Via, run};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum FuzzKind {
    Writer,
    Reader,
    Permit(u8),
}

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    Acquire {
        name: u8,
        kind: FuzzKind,
        lease: u16,
        handle: Option<u8>,
    },
    AcquireHuge {
        name: u8,
        lease: u64,
    },
    Extend {
        slot: u8,
        lease: u16,
        handle: Option<u8>,
    },
    Release {
        slot: u8,
        handle: Option<u8>,
    },
    ReleaseElsewhere {
        slot: u8,
    },
    IsHeld {
        slot: u8,
        handle: Option<u8>,
    },
    Advance(u16),
    ExpireDue,
    DropHandle(u8),
}

/// By name, or through the handle of name number `n`.
fn via(handle: Option<u8>) -> Via {
    handle.map_or(Via::Name, Via::Handle)
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let ops: Vec<Op> = ops
        .iter()
        .take(256)
        .map(|op| match *op {
            FuzzOp::Acquire {
                name,
                ref kind,
                lease,
                handle,
            } => Op::Acquire {
                name,
                kind: match *kind {
                    FuzzKind::Writer => Kind::Writer,
                    FuzzKind::Reader => Kind::Reader,
                    FuzzKind::Permit(n) => Kind::Permit(u32::from(n % 5)),
                },
                lease: u64::from(lease),
                via: via(handle),
            },
            // Zero, the longest lease and anything beyond, up to u64::MAX nanoseconds.
            FuzzOp::AcquireHuge { name, lease } => Op::Acquire {
                name,
                kind: Kind::Writer,
                lease,
                via: Via::Name,
            },
            FuzzOp::Extend {
                slot,
                lease,
                handle,
            } => Op::Extend {
                slot: usize::from(slot),
                lease: u64::from(lease),
                via: via(handle),
            },
            FuzzOp::Release { slot, handle } => Op::Release {
                slot: usize::from(slot),
                via: via(handle),
            },
            FuzzOp::ReleaseElsewhere { slot } => Op::ReleaseElsewhere {
                slot: usize::from(slot),
            },
            FuzzOp::IsHeld { slot, handle } => Op::IsHeld {
                slot: usize::from(slot),
                via: via(handle),
            },
            FuzzOp::Advance(by) => Op::Advance(u64::from(by)),
            FuzzOp::ExpireDue => Op::ExpireDue,
            FuzzOp::DropHandle(n) => Op::DropHandle(n),
        })
        .collect();
    if let Err(disagreement) = run(&ops) {
        panic!("{disagreement}");
    }
});
