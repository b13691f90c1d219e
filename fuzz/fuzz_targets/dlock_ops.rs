//! Arbitrary sequences of acquire (writer, reader or semaphore permit, on four names one of
//! which is empty), extend, release, release on another instance, is-held, clock advances and
//! expiry sweeps on the in-process backend agree step by step with the crate's reference model
//! of leased locks: granted or not, which error, strictly growing tokens per name, and the lease
//! running from the moment of the grant or extension.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_dlock::reference::{Kind, Op, run};
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
    },
    AcquireHuge {
        name: u8,
        lease: u64,
    },
    Extend {
        slot: u8,
        lease: u16,
    },
    Release {
        slot: u8,
    },
    ReleaseElsewhere {
        slot: u8,
    },
    IsHeld {
        slot: u8,
    },
    Advance(u16),
    ExpireDue,
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
            } => Op::Acquire {
                name,
                kind: match *kind {
                    FuzzKind::Writer => Kind::Writer,
                    FuzzKind::Reader => Kind::Reader,
                    FuzzKind::Permit(n) => Kind::Permit(u32::from(n % 5)),
                },
                lease: u64::from(lease),
            },
            // Zero, the longest lease and anything beyond, up to u64::MAX nanoseconds.
            FuzzOp::AcquireHuge { name, lease } => Op::Acquire {
                name,
                kind: Kind::Writer,
                lease,
            },
            FuzzOp::Extend { slot, lease } => Op::Extend {
                slot: usize::from(slot),
                lease: u64::from(lease),
            },
            FuzzOp::Release { slot } => Op::Release {
                slot: usize::from(slot),
            },
            FuzzOp::ReleaseElsewhere { slot } => Op::ReleaseElsewhere {
                slot: usize::from(slot),
            },
            FuzzOp::IsHeld { slot } => Op::IsHeld {
                slot: usize::from(slot),
            },
            FuzzOp::Advance(by) => Op::Advance(u64::from(by)),
            FuzzOp::ExpireDue => Op::ExpireDue,
        })
        .collect();
    if let Err(disagreement) = run(&ops) {
        panic!("{disagreement}");
    }
});
