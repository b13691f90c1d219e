//! One server process: spawn, wait until it answers, signal, restart, clean up.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{REQUIRE_SERVERS_ENV, orphans};

/// How long a server may take to answer after it was spawned. Generous: the machine may be
/// loaded, and this bounds only how long a broken start takes to be reported.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes and exit checks.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many sets of fresh ports `launch` tries before giving up.
pub(crate) const LAUNCH_ATTEMPTS: usize = 5;

/// Decides whether a test can run: `Some(path)` of the binary, or `None` after printing the
/// skip line. Panics instead when [`REQUIRE_SERVERS_ENV`] is `1`.
pub(crate) fn locate_or_skip(binary: &str, test_kind: &str) -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_SERVERS_ENV).as_deref() == Ok("1");
    match decide(find_in_path(binary), required, binary, test_kind) {
        Ok(path) => Some(path),
        Err(skip_line) => {
            // Written to the real stderr rather than through `eprintln!`, which the test
            // harness captures: a skipped test should say so even when it passes.
            let _ = writeln!(io::stderr(), "{skip_line}");
            None
        }
    }
}

/// The binary to run, or the line that explains the skip.
fn decide(
    found: Option<PathBuf>,
    required: bool,
    binary: &str,
    test_kind: &str,
) -> Result<PathBuf, String> {
    match found {
        Some(path) => Ok(path),
        None if required => panic!(
            "{binary} is not installed but {REQUIRE_SERVERS_ENV}=1 requires {test_kind} tests"
        ),
        None => Err(format!(
            "skipped: {test_kind} test needs `{binary}`, which is not installed \
             (set {REQUIRE_SERVERS_ENV}=1 to make this a failure)"
        )),
    }
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let file = format!("{binary}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&path)
        .map(|dir| dir.join(&file))
        .find(|candidate| candidate.is_file())
}

/// Ports handed to this process's servers and not yet released. The kernel may hand a port
/// that one of our servers holds only while stopped to a later `bind(0)`; this set keeps two
/// servers of one test binary from ever sharing a port, also across stop and restart.
static RESERVED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port reserved for one server of this process until dropped.
///
/// The port itself is released before the server binds it, so another *process* can take it
/// in between; [`ServerProcess::wait_ready`] notices (the child exits, or a stranger answers)
/// and `launch` retries with fresh ports.
#[derive(Debug)]
pub(crate) struct Port(u16);

impl Port {
    /// A free loopback port that no other server of this process holds.
    pub(crate) fn free() -> io::Result<Self> {
        loop {
            let listener = TcpListener::bind(("127.0.0.1", 0))?;
            let port = listener.local_addr()?.port();
            let mut reserved = RESERVED_PORTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if reserved.insert(port) {
                return Ok(Self(port));
            }
        }
    }

    /// A listener on a free loopback port, with the port reserved until the `Port` is
    /// dropped. Unlike [`free`](Self::free), the port stays bound, so no other process can
    /// take it either.
    pub(crate) fn bind_loopback() -> io::Result<(TcpListener, Self)> {
        // Ports the kernel offered that a stopped server of ours holds stay bound here until
        // a free one is found, so they are not offered again.
        let mut rejected = Vec::new();
        loop {
            let listener = TcpListener::bind(("127.0.0.1", 0))?;
            let port = listener.local_addr()?.port();
            let mut reserved = RESERVED_PORTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if reserved.insert(port) {
                return Ok((listener, Self(port)));
            }
            rejected.push(listener);
        }
    }

    pub(crate) fn number(&self) -> u16 {
        self.0
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        loopback(self.0)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        RESERVED_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Whether `port` is reserved for a server (or proxy) of this process.
#[cfg(test)]
pub(crate) fn is_reserved(port: u16) -> bool {
    RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&port)
}

/// A loopback address on `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What a readiness probe found at the server's address.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Our server answers requests.
    Ready,
    /// Nothing answers yet, or our server is still loading.
    NotReady(String),
    /// A server answers, but it is not the one we started.
    Stranger(String),
}

/// Asks the server at `addr` whether it is ready and whether it is the process `pid`.
pub(crate) type ProbeFn = Box<dyn Fn(SocketAddr, u32) -> Probe + Send + Sync>;

/// What it takes to run one server: its command line and how to tell it is ready.
pub(crate) struct ServerSpec {
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    /// Checks readiness and identity; must never report another server as ready.
    pub(crate) probe: ProbeFn,
    /// The address `probe` talks to.
    pub(crate) probe_addr: SocketAddr,
    /// Every port the server listens on, held for the server's lifetime.
    pub(crate) ports: Vec<Port>,
}

/// A running (or stopped, or paused) server process with its data directory.
pub(crate) struct ServerProcess {
    spec: ServerSpec,
    // Dropped after `child` is killed (see `Drop`), which removes the data.
    data_dir: tempfile::TempDir,
    /// Holds the lock on the data directory's owner file, which keeps the sweep of other test
    /// binaries away from the directory while this handle lives.
    _owner: File,
    /// The child while it has not been reaped. Once `try_wait` or `wait` reports its exit the
    /// handle is dropped, so no signal can reach a process that reused its id.
    child: Option<Child>,
    // Read only where signals exist.
    #[cfg_attr(not(unix), allow(dead_code))]
    paused: bool,
}

impl ServerProcess {
    /// Creates a data directory (after sweeping those of dead test binaries) and lets
    /// `make_spec` build the command line for it. Nothing is spawned yet.
    pub(crate) fn prepare(
        prefix: &str,
        make_spec: impl FnOnce(&Path) -> io::Result<ServerSpec>,
    ) -> io::Result<Self> {
        let temp = std::env::temp_dir();
        orphans::sweep_stale_dirs(&temp);
        let data_dir = tempfile::Builder::new().prefix(prefix).tempdir_in(&temp)?;
        let owner = orphans::claim(data_dir.path())?;
        let spec = make_spec(data_dir.path())?;
        Ok(Self {
            spec,
            data_dir,
            _owner: owner,
            child: None,
            paused: false,
        })
    }

    /// Prepares, spawns and waits for a server; retries with fresh ports when it cannot start,
    /// which is what happens when another process took a reserved port first.
    pub(crate) fn launch(
        prefix: &str,
        make_spec: impl Fn(&Path) -> io::Result<ServerSpec>,
    ) -> io::Result<Self> {
        let mut last_error = None;
        for _ in 0..LAUNCH_ATTEMPTS {
            let mut process = Self::prepare(prefix, &make_spec)?;
            let started = process
                .spawn()
                .and_then(|()| process.wait_ready(Instant::now() + STARTUP_TIMEOUT));
            match started {
                Ok(()) => return Ok(process),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("server did not start")))
    }

    /// The address the server answers on (the one its probe talks to).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.spec.probe_addr
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child's pid if it has not exited, without reaping it (so `&self` suffices).
    pub(crate) fn running_pid(&self) -> Option<u32> {
        let pid = self.pid()?;
        has_exited(pid).is_none_or(|exited| !exited).then_some(pid)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("server.log")
    }

    /// Starts the process without waiting for it to answer.
    pub(crate) fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(&self.spec.binary);
        command
            .args(&self.spec.args)
            .current_dir(self.data_dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(orphans::spawn(command)?);
        self.paused = false;
        Ok(())
    }

    /// Waits until the spawned process answers as itself. Fails, with the child killed, when
    /// it exits, when another server answers on its address, or at `deadline`.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            // Liveness first: a child that exited (say, because its port was taken) must not
            // be mistaken for ready because some other server answers on that port.
            let Some(pid) = self.live_pid() else {
                return Err(self.startup_error("exited"));
            };
            match (self.spec.probe)(self.spec.probe_addr, pid) {
                Probe::Ready => return Ok(()),
                Probe::Stranger(who) => {
                    self.kill();
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is answered by another server ({who}), not ours",
                            self.addr()
                        ),
                    ));
                }
                Probe::NotReady(why) if Instant::now() >= deadline => {
                    self.kill();
                    return Err(self.startup_error(&format!("was not ready in time ({why})")));
                }
                Probe::NotReady(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// The child's pid if it is still running; reaps it (and forgets it) if it exited.
    fn live_pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            Ok(Some(_)) | Err(_) => {
                self.child = None;
                self.paused = false;
                None
            }
        }
    }

    fn startup_error(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let kind = if log.to_ascii_lowercase().contains("address already in use") {
            io::ErrorKind::AddrInUse
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(
            kind,
            format!(
                "{} {what}; last lines of its log:\n{}",
                self.spec.binary.display(),
                tail.join("\n")
            ),
        )
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a timeout). Idempotent.
    pub(crate) fn stop(&mut self) {
        #[cfg(unix)]
        {
            if self.paused {
                self.resume();
            }
            let Some(pid) = self.live_pid() else {
                return;
            };
            signal_group(pid, libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if self.live_pid().is_none() {
                    return;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        self.kill();
    }

    /// Kills the server at once (SIGKILL), as a crash or power loss would. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The group as well as the child: Redis may have forked a rewrite child. The
            // child is not reaped yet (we hold its handle), so its id is still its own.
            #[cfg(unix)]
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Starts the server again on the same ports and data directory. Fails, without talking
    /// to it, if another process took one of the ports while the server was down.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_again()?;
        self.wait_ready(Instant::now() + STARTUP_TIMEOUT)
            .map_err(|error| self.port_taken_or(error))
    }

    /// Spawns a stopped server again after checking its ports are still free.
    pub(crate) fn spawn_again(&mut self) -> io::Result<()> {
        for port in &self.spec.ports {
            if let Err(error) = TcpListener::bind(port.addr()) {
                return Err(io::Error::new(
                    error.kind(),
                    format!(
                        "cannot restart: port {} was taken while the server was down ({error})",
                        port.number()
                    ),
                ));
            }
        }
        self.spawn()
    }

    fn port_taken_or(&self, error: io::Error) -> io::Error {
        if error.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "cannot restart: a port of {} was taken while the server was down: {error}",
                    self.addr()
                ),
            )
        } else {
            error
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
    ///
    /// kill(2) returns before the stop takes effect, and a busy thread can still answer a
    /// request in between; on Linux this returns only once every thread of the server is
    /// stopped.
    #[cfg(unix)]
    pub(crate) fn pause(&mut self) -> io::Result<()> {
        let Some(pid) = self.live_pid() else {
            return Ok(());
        };
        signal_group(pid, libc::SIGSTOP);
        self.paused = true;
        #[cfg(target_os = "linux")]
        wait_until_stopped(pid, STOP_TIMEOUT)?;
        Ok(())
    }

    /// Lets a paused process run again (SIGCONT).
    #[cfg(unix)]
    pub(crate) fn resume(&mut self) {
        if let Some(pid) = self.live_pid() {
            signal_group(pid, libc::SIGCONT);
        }
        self.paused = false;
    }

    /// Whether the process is alive (a paused process is). Reaps it if it exited.
    pub(crate) fn is_running(&mut self) -> bool {
        self.live_pid().is_some()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL works on a stopped (paused) process too, and a test that is being torn
        // down, possibly by a panic, has no use for a graceful shutdown.
        self.kill();
    }
}

/// Waits until every thread of `pid` is stopped; `TimedOut` if that takes longer than
/// `timeout`.
#[cfg(target_os = "linux")]
fn wait_until_stopped(pid: u32, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if all_threads_stopped(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("process {pid} was sent SIGSTOP but not stopped after {timeout:?}"),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Whether every thread of process `pid` is stopped (or gone), from `/proc/PID/task/*/stat`.
#[cfg(target_os = "linux")]
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            // The state follows the parenthesised command name: `tid (name) S ...`.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                matches!(rest.as_bytes().first(), Some(b'T' | b't' | b'Z' | b'X'))
            })
        })
    })
}

/// Whether our unreaped child `pid` has exited, asked without reaping it (`WNOWAIT`), so
/// `Child::try_wait` still sees the exit later. `None` if that cannot be asked.
#[cfg(unix)]
#[allow(unsafe_code)]
fn has_exited(pid: u32) -> Option<bool> {
    let pid = libc::id_t::try_from(pid).ok()?;
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid siginfo_t the call may write; P_PID names one child of ours.
    let result = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if result != 0 {
        return None;
    }
    // SAFETY: waitid filled `info`; with WNOHANG and no exited child, `si_pid` is zero.
    Some(unsafe { info.si_pid() } != 0)
}

/// Whether child `pid` has exited; unknown without `waitid`.
#[cfg(not(unix))]
fn has_exited(_pid: u32) -> Option<bool> {
    None
}

/// Sends `signal` to the process group led by `pid`.
///
/// Callers pass only the id of a child they have not reaped: until then the id (and the group
/// the child leads) cannot be reused by an unrelated process.
#[cfg(unix)]
#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // Never 0 or 1: kill(0) and kill(-1) would signal our own group or every process.
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions. A negative id addresses the group
    // our unreaped child leads (it was spawned with `process_group(0)`).
    unsafe {
        libc::kill(-pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_skipped_unless_required() {
        let skip = decide(None, false, "no-such-server", "Demo").unwrap_err();
        assert!(
            skip.starts_with("skipped: Demo test needs `no-such-server`"),
            "{skip}"
        );
        assert!(!skip.contains('\n'), "the skip is one line: {skip}");
        let found = PathBuf::from("/usr/bin/true");
        assert_eq!(decide(Some(found.clone()), true, "true", "Demo"), Ok(found));
    }

    #[test]
    #[should_panic(expected = "no-such-server is not installed but INFRA_REQUIRE_SERVERS=1")]
    fn a_missing_binary_fails_when_required() {
        let _ = decide(None, true, "no-such-server", "Demo");
    }

    #[cfg(unix)] // `sh`
    #[test]
    fn binaries_are_found_on_the_path() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("surely-not-a-binary-name").is_none());
    }

    #[test]
    fn free_ports_are_on_loopback_bindable_and_never_handed_out_twice() {
        let ports: Vec<Port> = (0..50).map(|_| Port::free().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().map(Port::number).collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(TcpListener::bind(ports[0].addr()).is_ok());
        assert!(ports[0].addr().ip().is_loopback());
        let number = ports[0].number();
        drop(ports);
        assert!(
            !RESERVED_PORTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&number),
            "a dropped port stays reserved"
        );
    }

    /// A probe for `sh` children, which never listen: always "not ready".
    #[cfg(unix)]
    fn silent_spec(script: &str) -> impl Fn(&Path) -> io::Result<ServerSpec> + '_ {
        move |_| {
            Ok(ServerSpec {
                binary: PathBuf::from("sh"),
                args: vec!["-c".into(), script.into()],
                probe: Box::new(|_, _| Probe::NotReady("silent".into())),
                probe_addr: loopback(1),
                ports: Vec::new(),
            })
        }
    }

    #[cfg(unix)] // `sh`
    #[test]
    fn a_child_that_exits_is_reported_with_its_log() {
        let mut process =
            ServerProcess::prepare("infra-unit-", silent_spec("echo bind failed; exit 1")).unwrap();
        process.spawn().unwrap();
        let error = process
            .wait_ready(Instant::now() + STARTUP_TIMEOUT)
            .unwrap_err();
        assert!(error.to_string().contains("bind failed"), "{error}");
        assert_eq!(process.pid(), None, "an exited child is forgotten");
    }

    #[cfg(unix)] // `sh`
    #[test]
    fn an_exited_child_is_forgotten_once_reaped() {
        let mut process = ServerProcess::prepare("infra-unit-", silent_spec("exit 0")).unwrap();
        process.spawn().unwrap();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while process.is_running() {
            assert!(Instant::now() < deadline, "`sh -c 'exit 0'` never exited");
            std::thread::sleep(POLL_INTERVAL);
        }
        // Reaped: the pid may now belong to anyone, so it is no longer reported or signalled.
        assert_eq!(process.pid(), None);
        #[cfg(unix)]
        {
            process.pause().unwrap();
            process.resume();
        }
        process.stop();
        assert!(!process.is_running());
    }

    #[cfg(unix)] // `sh`
    #[test]
    fn a_stranger_on_the_port_is_never_taken_for_our_server() {
        let mut process = ServerProcess::prepare("infra-unit-", |_| {
            Ok(ServerSpec {
                binary: PathBuf::from("sh"),
                args: vec!["-c".into(), "exec sleep 600".into()],
                probe: Box::new(|_, _| Probe::Stranger("pid 1".into())),
                probe_addr: loopback(1),
                ports: Vec::new(),
            })
        })
        .unwrap();
        process.spawn().unwrap();
        let error = process
            .wait_ready(Instant::now() + STARTUP_TIMEOUT)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        assert!(!process.is_running(), "our child is killed");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pause_returns_once_the_process_is_stopped() {
        let mut process =
            ServerProcess::prepare("infra-unit-", silent_spec("exec sleep 600")).unwrap();
        process.spawn().unwrap();
        let pid = process.pid().unwrap();
        assert!(
            !all_threads_stopped(pid),
            "a running process counts as stopped"
        );
        process.pause().unwrap();
        assert!(all_threads_stopped(pid), "pause returned before the stop");
        assert!(process.is_running(), "a paused process is alive");
        process.resume();
        process.kill();
        assert!(!process.is_running());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn waiting_for_a_stop_that_does_not_happen_is_an_error() {
        let mut process =
            ServerProcess::prepare("infra-unit-", silent_spec("exec sleep 600")).unwrap();
        process.spawn().unwrap();
        // Never sent SIGSTOP, so it never stops.
        let error =
            wait_until_stopped(process.pid().unwrap(), Duration::from_millis(100)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        process.kill();
    }

    #[cfg(unix)] // `sh`
    #[test]
    fn restart_refuses_a_port_taken_while_down() {
        let port = Port::free().unwrap();
        let addr = port.addr();
        let mut process = ServerProcess::prepare("infra-unit-", move |_| {
            Ok(ServerSpec {
                binary: PathBuf::from("sh"),
                args: vec!["-c".into(), "exit 0".into()],
                probe: Box::new(|_, _| Probe::NotReady("silent".into())),
                probe_addr: addr,
                ports: vec![port],
            })
        })
        .unwrap();
        let _stranger = TcpListener::bind(addr).unwrap();
        let error = process.restart().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("was taken while the server was down"),
            "{error}"
        );
        assert_eq!(process.pid(), None, "nothing was spawned");
    }
}
