//! Keeping servers from outliving the test binary that started them.
//!
//! A test binary can die without running any destructor: SIGKILL from a CI timeout, an abort,
//! a developer's kill. Three things cover that:
//!
//! - On Linux every server gets a parent-death signal (`PR_SET_PDEATHSIG`, SIGKILL). The kernel
//!   sends it when the *thread* that spawned the child exits, and the test harness runs each test
//!   on a thread that ends with the test, so all servers are spawned from one spawner thread
//!   that lives as long as the process.
//! - On Unix every server leads a process group of its own, so signals reach the processes it
//!   forks (Redis forks to rewrite its append-only file) and a terminal's Ctrl-C is left to the
//!   test binary, whose death then takes the servers along.
//! - Every data directory holds an owner file on which the server's handle holds an exclusive
//!   `flock` for as long as it lives (the lock goes with the process, however it dies). Starting
//!   a server first removes the `infra-*` directories whose owner file nobody holds locked,
//!   which is what a killed run leaves behind. A process id would not do: an owner in another
//!   pid namespace (a container sharing the temporary directory) would look dead.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender, SyncSender};

/// The file in each data directory that names the process owning it.
pub(crate) const OWNER_FILE: &str = "infra-testkit.owner";
/// The prefix every data directory of this crate starts with.
pub(crate) const DIR_PREFIX: &str = "infra-";

type SpawnRequest = (Command, SyncSender<io::Result<Child>>);

/// Spawns `command` on the spawner thread, so the parent-death signal is tied to a thread that
/// lives as long as the process rather than to the calling test's thread.
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("infra-testkit-spawner".into())
            .spawn(move || {
                // The sending half lives in a static, so this loop ends only with the process.
                for (command, reply) in incoming {
                    let _ = reply.send(spawn_here(command));
                }
            })
            .expect("cannot start the server spawner thread");
        requests
    });
    let (reply, result) = mpsc::sync_channel(1);
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the server spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the server spawner thread is gone"))?
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn spawn_here(mut command: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;

    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("process id out of range"))?;
    command.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // `die_with_parent`, which makes async-signal-safe system calls and does not allocate.
    unsafe {
        command.pre_exec(move || die_with_parent(parent));
    }
    command.spawn()
}

/// In a freshly forked child: asks for SIGKILL when the spawning thread exits, and fails if
/// `parent` already died before that request (then no signal would ever come).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes one integer argument, the signal; no memory is involved.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid(2) has no preconditions and touches no memory.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(all(unix, not(target_os = "linux")))]
fn spawn_here(mut command: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;

    command.process_group(0);
    command.spawn()
}

#[cfg(not(unix))]
fn spawn_here(mut command: Command) -> io::Result<Child> {
    command.spawn()
}

/// Marks `dir` as owned by the caller for as long as the returned file stays open: the file
/// holds an exclusive lock on the owner file (Unix), which the sweep respects. It also names
/// this process, for people reading the directory.
///
/// The owner file is written and locked under a temporary name and then renamed into place,
/// so a sweep never finds it unlocked.
pub(crate) fn claim(dir: &Path) -> io::Result<File> {
    let pending = dir.join(format!("{OWNER_FILE}.new"));
    let mut owner = File::create(&pending)?;
    #[cfg(unix)]
    lock_exclusive(&owner)?;
    write!(owner, "{}", std::process::id())?;
    fs::rename(&pending, dir.join(OWNER_FILE))?;
    Ok(owner)
}

/// Removes the `infra-*` directories under `parent` whose owner file no one holds locked: their
/// owner is gone. Directories without an owner file are left alone: they may be in the middle
/// of being created, or belong to something else.
#[cfg(unix)]
pub(crate) fn sweep_stale_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = File::open(dir.join(OWNER_FILE)) else {
            continue;
        };
        // Held while removing, so the owner file cannot be claimed again in between.
        if lock_exclusive(&owner).is_ok() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Takes an exclusive `flock` on `file`'s open file description without waiting. Fails with
/// `WouldBlock` if another open file description (of any process) holds it.
#[cfg(unix)]
#[allow(unsafe_code)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // SAFETY: flock(2) on a descriptor `file` keeps open; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without `flock` there is no way to tell a live owner from a dead one, so nothing is swept.
#[cfg(not(unix))]
pub(crate) fn sweep_stale_dirs(_parent: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[cfg(unix)]
    #[test]
    fn the_sweep_leaves_claimed_unowned_and_foreign_directories() {
        let parent = tempfile::tempdir().unwrap();
        let claimed = parent.path().join("infra-claimed");
        let unowned = parent.path().join("infra-unowned");
        let foreign = parent.path().join("other-dead");
        for dir in [&claimed, &unowned, &foreign] {
            fs::create_dir(dir).unwrap();
        }
        let owner = claim(&claimed).unwrap();
        assert_eq!(
            fs::read_to_string(claimed.join(OWNER_FILE)).unwrap(),
            std::process::id().to_string()
        );
        fs::write(foreign.join(OWNER_FILE), dead_pid().to_string()).unwrap();

        sweep_stale_dirs(parent.path());

        assert!(claimed.exists(), "a claimed directory was removed");
        assert!(
            unowned.exists(),
            "a directory without an owner file must not be swept"
        );
        assert!(foreign.exists(), "only infra-* directories are swept");
        drop(owner);
        sweep_stale_dirs(parent.path());
        assert!(
            !claimed.exists(),
            "a directory whose owner is gone survived"
        );
    }

    /// Takes an exclusive lock on `file`'s open file description, as an owner does.
    #[cfg(unix)]
    #[allow(unsafe_code)]
    fn lock(file: &fs::File) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor `file` keeps open; no memory is involved.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    }

    #[cfg(unix)]
    #[test]
    fn the_sweep_removes_a_directory_only_when_no_one_holds_its_owner_lock() {
        let parent = tempfile::tempdir().unwrap();
        // An owner in another pid namespace: its pid means nothing here, but it holds the lock.
        let held = parent.path().join("infra-held");
        // An owner whose pid is ours (or was reused) but that no longer holds the lock.
        let released = parent.path().join("infra-released");
        for dir in [&held, &released] {
            fs::create_dir(dir).unwrap();
        }
        fs::write(held.join(OWNER_FILE), dead_pid().to_string()).unwrap();
        fs::write(released.join(OWNER_FILE), std::process::id().to_string()).unwrap();
        let holder = fs::File::open(held.join(OWNER_FILE)).unwrap();
        lock(&holder);

        sweep_stale_dirs(parent.path());

        assert!(
            held.exists(),
            "a directory whose owner holds the lock was removed"
        );
        assert!(!released.exists(), "an unlocked directory survived");
        drop(holder);
        sweep_stale_dirs(parent.path());
        assert!(
            !held.exists(),
            "the lock's release did not free the directory"
        );
    }

    #[cfg(unix)]
    #[test]
    fn spawned_children_run_and_report_their_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let status = spawn(command).unwrap().wait().unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
