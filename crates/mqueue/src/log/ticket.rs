//! The ticket of an append written ahead of its fsync (`Log::append_nowait`).

use std::fmt;

use super::Log;
use crate::Error;

/// An append written by [`Log::append_nowait`] and acknowledged once [`wait`](Self::wait)
/// (or, with feature `tokio`, `wait_async`) returns: under
/// [`FsyncPolicy::Always`](super::FsyncPolicy::Always), only after an fsync that began after
/// the record was written has returned.
#[must_use = "an append is acknowledged only once its ticket's `wait` returns"]
pub struct AppendTicket<'log> {
    pub(super) log: &'log Log,
    pub(super) offset: u64,
    /// An fsync must still cover the record before it is acknowledged.
    pub(super) pending: bool,
}

impl<'log> AppendTicket<'log> {
    /// The ticket of the record written at `offset`; `pending` when an fsync is due for it.
    pub(crate) fn written(log: &'log Log, offset: u64, pending: bool) -> Self {
        Self {
            log,
            offset,
            pending,
        }
    }

    /// The record's offset. Readers see it once it is durable (under `Always`).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Returns the record's offset once it is durable per the log's
    /// [`FsyncPolicy`](super::FsyncPolicy): under `Always`, after an fsync covering it, which
    /// this call runs unless one in flight or already done covers it (and then one fsync covers
    /// every record written before it began, from every producer).
    ///
    /// # Errors
    /// [`Error::Io`] when this call's fsync failed, [`Error::Failed`] when another one did:
    /// the record is then not promised durable.
    pub fn wait(self) -> Result<u64, Error> {
        if self.pending {
            self.log.make_durable(self.offset + 1)?;
        }
        Ok(self.offset)
    }
}

impl fmt::Debug for AppendTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendTicket")
            .field("offset", &self.offset)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}
