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
//! - Every data directory holds an owner file with the test binary's process id. Starting a
//!   server first removes the `infra-*` directories whose owner is dead, which is what a killed
//!   run leaves behind.

use std::fs;
use std::io;
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

/// Marks `dir` as owned by this process.
pub(crate) fn claim(dir: &Path) -> io::Result<()> {
    fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
}

/// Removes the `infra-*` directories under `parent` whose owner process is dead. Directories
/// without an owner file, or whose owner cannot be read, are left alone: they may be in the
/// middle of being created, or belong to something else.
pub(crate) fn sweep_stale_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(owner) = owner.trim().parse::<u32>() else {
            continue;
        };
        if owner != std::process::id() && !is_alive(owner) {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Whether a process with this id exists (conservatively `true` where that cannot be asked).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process with this id exists (conservatively `true` where that cannot be asked).
#[cfg(not(unix))]
pub(crate) fn is_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[cfg(unix)]
    #[test]
    fn the_sweep_removes_only_directories_of_dead_owners() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("infra-dead");
        let live = parent.path().join("infra-live");
        let unowned = parent.path().join("infra-unowned");
        let foreign = parent.path().join("other-dead");
        for dir in [&dead, &live, &unowned, &foreign] {
            fs::create_dir(dir).unwrap();
        }
        let dead_owner = dead_pid();
        fs::write(dead.join(OWNER_FILE), dead_owner.to_string()).unwrap();
        fs::write(foreign.join(OWNER_FILE), dead_owner.to_string()).unwrap();
        claim(&live).unwrap();
        fs::write(unowned.join(OWNER_FILE), "not a pid").unwrap();

        sweep_stale_dirs(parent.path());

        assert!(!dead.exists(), "a dead owner's directory survived");
        assert!(live.exists(), "a live owner's directory was removed");
        assert!(unowned.exists(), "an unreadable owner must not be swept");
        assert!(foreign.exists(), "only infra-* directories are swept");
    }

    #[cfg(unix)]
    #[test]
    fn liveness_follows_the_process() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(dead_pid()));
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
