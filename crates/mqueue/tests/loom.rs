//! Model-checked concurrency: every interleaving of a few threads on the log's group commit
//! (`mod group_commit`) and the work queue's leases (`mod lease`).
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-mqueue --test loom`
#![cfg(infra_loom)]

mod group_commit {
    //! Appenders write a record, then wait in `GroupCommit::wait` with a sync that marks
    //! everything written so far as synced. Checked: no appender returns before a sync covers
    //! its record, and no sync runs for an appender whose record an earlier sync already
    //! covered (so concurrent appenders share syncs).
    //!
    //! Guards: the durable-point check before leading, the one-leader flag (`syncing`), and
    //! followers waiting on the condition variable until the point passes their end.

    use infra_common::sync::{Arc, Mutex, model, thread};
    use infra_mqueue::log::GroupCommit;

    #[derive(Debug, Default)]
    struct Disk {
        written: u64,
        synced: u64,
        syncs: u64,
    }

    fn appenders(count: u64) {
        model(move || {
            let commit = Arc::new(GroupCommit::new(0));
            let disk = Arc::new(Mutex::new(Disk::default()));
            let threads: Vec<_> = (0..count)
                .map(|_| {
                    let (commit, disk) = (Arc::clone(&commit), Arc::clone(&disk));
                    thread::spawn(move || {
                        let end = {
                            let mut disk = disk.lock();
                            disk.written += 1;
                            disk.written
                        };
                        commit
                            .wait(end, || {
                                let mut disk = disk.lock();
                                assert!(
                                    disk.synced < end,
                                    "a sync ran for an appender an earlier sync covered"
                                );
                                disk.syncs += 1;
                                disk.synced = disk.written;
                                Ok(disk.synced)
                            })
                            .unwrap();
                        assert!(
                            disk.lock().synced >= end,
                            "an appender returned before a sync covered its record"
                        );
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let disk = disk.lock();
            assert_eq!(disk.synced, count);
            assert!(disk.syncs >= 1 && disk.syncs <= count);
            assert_eq!(commit.durable(), count);
        });
    }

    #[test]
    fn two_appenders_are_durable_on_return_and_share_syncs() {
        appenders(2);
    }

    #[test]
    fn three_appenders_are_durable_on_return_and_share_syncs() {
        appenders(3);
    }
}
