//! Segment rolls and retention: the work a log does on its directory's files.
//!
//! [`Files`] owns what that work needs (the directory, a shared handle on the file layer, the
//! retention rule and the metrics), so that it runs wherever it is handed: on the appending
//! thread for a blocking append, on tokio's blocking pool for an async one (see
//! `async_append.rs`), with the log's state lock taken by whoever runs it.

use std::path::PathBuf;
use std::time::Duration;

use infra_common::sync::Arc;

use super::segment::Segment;
use super::storage::Storage;
use super::{Inner, Retention};
use crate::Error;

/// A log's directory, and how it rolls segments and deletes old ones.
#[derive(Debug, Clone)]
pub(super) struct Files {
    pub(super) dir: PathBuf,
    pub(super) storage: Arc<Box<dyn Storage>>,
    pub(super) retention: Retention,
    #[cfg(feature = "metrics")]
    pub(super) metrics: super::metrics::LogMetrics,
}

impl Files {
    /// Syncs the active segment (and with it everything written before the call), starts a
    /// new one at the next offset (created, its header synced, then the directory synced),
    /// then applies retention at the wall-clock time `now_millis`.
    ///
    /// Retention's own failure (a segment that cannot be deleted, a directory sync after a
    /// deletion that failed) does not fail the roll: the append that rolled needs none of it,
    /// and the segments it could not delete stay for the next roll or
    /// [`Log::enforce_retention`](super::Log::enforce_retention), which reports the error.
    /// It is counted in the metrics.
    ///
    /// The order is what a power loss needs: the new segment's name must not reach the disk
    /// before the finished segment's last records, or a reopen would find the new segment's
    /// base past the records the old one kept, and refuse the log as corrupt.
    pub(super) fn roll(&self, inner: &mut Inner, now_millis: u64) -> Result<(), Error> {
        let active = &inner.active;
        if let Err(error) = active.file.sync() {
            let error = Error::io("fsync", &active.path, error);
            inner.failed = true;
            return Err(error);
        }
        self.count_fsync();
        let segment = Segment::create(&**self.storage, &self.dir, inner.next, now_millis)
            .inspect_err(|_| {
                // The new segment's file may exist already, named for the next offset: a
                // record that then fitted in the old segment would take that offset too, and
                // no reopen could chain the segments again. So the log stops, as after a
                // failed fsync; a reopen finds the new file as the newest segment, where the
                // old one ends.
                inner.failed = true;
            })?;
        inner.bytes += segment.len;
        inner.allocated += segment.allocated;
        let sealed = std::mem::replace(&mut inner.active, segment);
        inner.sealed.insert(sealed.base, sealed);
        if self.retain(inner, now_millis).is_err() {
            self.count_retention_failure();
        }
        Ok(())
    }

    /// Deletes the oldest segments the retention rule no longer keeps at `now_millis`; how
    /// many went.
    pub(super) fn retain(&self, inner: &mut Inner, now_millis: u64) -> Result<usize, Error> {
        let Retention { max_bytes, max_age } = self.retention;
        self.remove_oldest_while(inner, |inner| {
            // The segment after the oldest was started once the oldest's last record was in.
            let next_started = inner.sealed.values().nth(1).unwrap_or(&inner.active);
            let over_size = max_bytes.is_some_and(|max| inner.allocated > max);
            let too_old = max_age.is_some_and(|age: Duration| {
                let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                now_millis.saturating_sub(next_started.created_millis) >= age
            });
            over_size || too_old
        })
    }

    /// Deletes sealed segments oldest first, one at a time, while there is one and `due` says
    /// the oldest should go; how many went. The depth gauge follows what was deleted, also
    /// when a deletion then fails.
    pub(super) fn remove_oldest_while(
        &self,
        inner: &mut Inner,
        mut due: impl FnMut(&Inner) -> bool,
    ) -> Result<usize, Error> {
        let mut count = 0;
        let mut outcome = Ok(());
        while !inner.sealed.is_empty() && due(inner) {
            if let Err(error) = self.remove_oldest(inner) {
                outcome = Err(error);
                break;
            }
            count += 1;
        }
        if count > 0 {
            self.removed(inner);
        }
        outcome.map(|()| count)
    }

    /// Deletes the oldest sealed segment, which the caller has checked exists, and makes the
    /// deletion durable (a directory fsync) before the caller deletes another. A file system
    /// may write unlinks back out of order: one that kept a later deletion across a power
    /// loss and lost an earlier one would leave an older segment beside a gap in the offsets,
    /// which a reopen refuses as corruption. Deleted one at a time, oldest first, the only
    /// deletion a power loss can take back is the last, and the segment it brings back is
    /// just before the ones kept. (A deletion whose sync failed is made durable before the
    /// next one is made.)
    pub(super) fn remove_oldest(&self, inner: &mut Inner) -> Result<(), Error> {
        let Some((_, oldest)) = inner.sealed.first_key_value() else {
            return Ok(());
        };
        if inner.unlink_in_doubt {
            self.sync_dir()?;
            inner.unlink_in_doubt = false;
        }
        self.storage
            .remove(&oldest.path)
            .map_err(|e| Error::io("remove", &oldest.path, e))?;
        inner.bytes -= oldest.len;
        inner.allocated -= oldest.allocated;
        inner.sealed.pop_first();
        inner.unlink_in_doubt = true;
        self.sync_dir()?;
        inner.unlink_in_doubt = false;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), Error> {
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }

    /// After segments were deleted: the depth gauge.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(super) fn removed(&self, inner: &Inner) {
        #[cfg(feature = "metrics")]
        self.metrics.depth(inner.next - inner.first());
    }

    pub(super) fn count_fsync(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.fsynced();
    }

    fn count_retention_failure(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.retention_failed();
    }
}
