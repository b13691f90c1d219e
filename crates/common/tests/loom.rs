//! Model checks proving that `infra_common::sync` really hands out loom's primitives.
//!
//! Run with `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-common --test loom`.
//! If the shim silently fell back to std, loom would explore nothing, and the broken model
//! below would pass by luck instead of failing on the interleaving that loses an update.
#![cfg(infra_loom)]

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Condvar, Mutex, model, thread};
use infra_common::{Clock, ManualClock};
use std::time::Duration;

/// Two threads incrementing with `fetch_add` never lose an update.
#[test]
fn fetch_add_never_loses_an_update() {
    model(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || counter.fetch_add(1, Ordering::Relaxed))
        };
        counter.fetch_add(1, Ordering::Relaxed);
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    });
}

/// A load-then-store increment is a textbook race; loom must find the interleaving where one
/// update is lost. This test passes only if the model fails, which proves the shim is wired.
#[test]
#[should_panic(expected = "lost an update")]
fn load_then_store_race_is_found() {
    model(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let racy_increment = |counter: &AtomicU64| {
            let seen = counter.load(Ordering::SeqCst);
            counter.store(seen + 1, Ordering::SeqCst);
        };
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || racy_increment(&counter))
        };
        racy_increment(&counter);
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 2, "lost an update");
    });
}

/// The Mutex/Condvar wrappers hand a value across threads in every interleaving.
#[test]
fn condvar_handoff_completes() {
    model(|| {
        let slot = Arc::new((Mutex::new(None), Condvar::new()));
        let producer = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                *slot.0.lock() = Some(1);
                slot.1.notify_one();
            })
        };
        let mut guard = slot.0.lock();
        while guard.is_none() {
            slot.1.wait(&mut guard);
        }
        assert_eq!(*guard, Some(1));
        drop(guard);
        producer.join().unwrap();
    });
}

/// Concurrent `advance` calls on a shared manual clock add up exactly.
#[test]
fn manual_clock_advances_add_up() {
    model(|| {
        let clock = ManualClock::new();
        let other = {
            let clock = clock.clone();
            thread::spawn(move || clock.advance(Duration::from_nanos(3)))
        };
        clock.advance(Duration::from_nanos(4));
        other.join().unwrap();
        assert_eq!(clock.now_nanos(), 7);
    });
}
