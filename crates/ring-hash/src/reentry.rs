//! Which shared placements (and snapshot cells, for readers on an overflow stripe) this thread
//! is inside of, so a change that would wait for itself is refused instead of hanging.
//!
//! A change publishes a snapshot and then waits for every reader of the old one to leave; a
//! change called from inside a reader's closure on the same thread waits for its own caller
//! forever. A change called from inside another change's closure waits for the lock its caller
//! holds. Each section records the address of the placement it is on, for the thread that
//! runs it, and a change checks the record first. Owners are told apart by address, so two
//! kinds of owner must not share one (a struct and its first field do).

use std::cell::RefCell;

use infra_common::sync::thread::thread_local;

use crate::Error;

thread_local! {
    /// Addresses of the placements whose snapshot or change closure runs on this thread, in
    /// the order they were entered (nesting is rare, so a short list beats a set).
    static OPEN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// This thread is inside a closure of the placement at `owner`; leaving drops the record, also
/// when the closure panics.
///
/// Once this thread's record is destroyed (a read from another thread-local's destructor),
/// nothing is recorded or found: such a late reader cannot run a change of its own anyway.
#[derive(Debug)]
pub(crate) struct Section {
    owner: usize,
    recorded: bool,
}

impl Section {
    /// Records that this thread runs a closure of `owner`.
    pub(crate) fn enter<T>(owner: &T) -> Self {
        let owner = std::ptr::from_ref(owner) as usize;
        let recorded = OPEN
            .try_with(|open| open.borrow_mut().push(owner))
            .is_some();
        Self { owner, recorded }
    }

    /// Whether this thread is inside a closure (or a read) of `owner`.
    pub(crate) fn is_open<T>(owner: &T) -> bool {
        let owner = std::ptr::from_ref(owner) as usize;
        OPEN.try_with(|open| open.borrow().contains(&owner))
            .unwrap_or(false)
    }

    /// [`Error::ChangeInsideOwnSection`] when this thread is inside a closure of `owner`.
    pub(crate) fn refuse_change<T>(owner: &T) -> Result<(), Error> {
        if Self::is_open(owner) {
            return Err(Error::ChangeInsideOwnSection);
        }
        Ok(())
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        if !self.recorded {
            return;
        }
        OPEN.try_with(|open| {
            let mut open = open.borrow_mut();
            if let Some(at) = open.iter().rposition(|&owner| owner == self.owner) {
                open.remove(at);
            }
        });
    }
}
