//! One server process: spawn, wait until it answers, signal, restart, clean up.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::REQUIRE_SERVERS_ENV;

/// How long a server may take to answer after it was spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes and exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

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
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// Reserves a free port on the loopback interface.
///
/// The port is released before the server binds it, so another process could take it in
/// between; [`ServerProcess::launch`] retries with fresh ports when that happens.
pub(crate) fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// A loopback address on `port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What it takes to run one server: its command line and how to tell it is ready.
pub(crate) struct ServerSpec {
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    /// Returns `Ok(())` once the server answers requests.
    pub(crate) probe: fn(SocketAddr) -> io::Result<()>,
    /// The address `probe` talks to.
    pub(crate) probe_addr: SocketAddr,
}

/// A running (or stopped, or paused) server process with its data directory.
pub(crate) struct ServerProcess {
    spec: ServerSpec,
    // Dropped after `child` is killed (see `Drop`), which removes the data.
    data_dir: tempfile::TempDir,
    child: Option<Child>,
    paused: bool,
}

impl ServerProcess {
    /// Creates a data directory, lets `make_spec` build the command line for it and a set of
    /// fresh ports, and starts the server. Retries with new ports if the server cannot start,
    /// which is what happens when another process took a reserved port first.
    pub(crate) fn launch(
        name: &str,
        make_spec: impl Fn(&Path) -> io::Result<ServerSpec>,
    ) -> io::Result<Self> {
        const ATTEMPTS: usize = 3;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let data_dir = tempfile::Builder::new().prefix(name).tempdir()?;
            let spec = make_spec(data_dir.path())?;
            let mut process = Self {
                spec,
                data_dir,
                child: None,
                paused: false,
            };
            match process.spawn_and_wait() {
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

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("server.log")
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.spec.binary)
            .args(&self.spec.args)
            .current_dir(self.data_dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.paused = false;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if (self.spec.probe)(self.spec.probe_addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(self.startup_error(&format!("exited with {status}")));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(self.startup_error("did not answer in time"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn startup_error(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "{} {what}; last lines of its log:\n{}",
            self.spec.binary.display(),
            tail.join("\n")
        ))
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a timeout). Idempotent.
    pub(crate) fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.child = None;
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.kill();
    }

    /// Kills the server at once (SIGKILL), as a crash or power loss would. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Starts the server again on the same ports and data directory.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
    pub(crate) fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a paused process run again (SIGCONT).
    pub(crate) fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGCONT);
        }
        self.paused = false;
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL works on a stopped (paused) process too, and a test that is being torn
        // down, possibly by a panic, has no use for a graceful shutdown.
        self.kill();
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned and have
    // not yet reaped, so it cannot name an unrelated process.
    unsafe {
        libc::kill(pid, signal);
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

    #[test]
    fn binaries_are_found_on_the_path() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("surely-not-a-binary-name").is_none());
    }

    #[test]
    fn free_ports_are_on_loopback_and_bindable() {
        let port = free_loopback_port().unwrap();
        assert!(TcpListener::bind(loopback(port)).is_ok());
    }
}
