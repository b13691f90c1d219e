//! What every server handle can do, whatever the engine behind it.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;

use crate::process::ServerProcess;

/// A private server process on loopback, removed with its data when dropped.
///
/// `K` names the engine ([`Redis`](crate::Redis) or [`Etcd`](crate::Etcd)); the engine adds
/// its own `start`, `url` and a tiny client on top of the lifecycle methods here. Use the
/// aliases [`RedisServer`](crate::RedisServer) and [`EtcdServer`](crate::EtcdServer).
pub struct Server<K> {
    process: ServerProcess,
    engine: PhantomData<K>,
}

impl<K> Server<K> {
    pub(crate) fn new(process: ServerProcess) -> Self {
        Self {
            process,
            engine: PhantomData,
        }
    }

    /// The loopback address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// The temporary data directory, removed when the server is dropped.
    pub fn data_dir(&self) -> &Path {
        self.process.data_dir()
    }

    /// The process id while the server runs (`None` once it has exited and been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The pid of our process if it has not exited, checked without reaping it.
    pub(crate) fn running_pid(&self) -> Option<u32> {
        self.process.running_pid()
    }

    /// `NotConnected` unless our process is running: its port may have been taken by another
    /// process since it stopped, and the built-in clients never talk to that one.
    pub(crate) fn ensure_running(&self) -> io::Result<u32> {
        self.running_pid().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the server at {} is not running", self.addr()),
            )
        })
    }

    /// Stops the server gracefully (SIGTERM; a plain kill where there are no signals). Its
    /// port and data stay reserved for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kills the server at once (SIGKILL), as a crash or power loss would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data; waits until it answers.
    ///
    /// # Errors
    ///
    /// If the server does not come back, or if another process took its port while it was
    /// down: then the error says so and nothing talks to that other process.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.restart()
    }

    /// Starts a stopped server again on the same port and data without waiting for it to
    /// answer: for cluster members, which answer only once a quorum of them runs.
    pub(crate) fn spawn_again(&mut self) -> io::Result<()> {
        self.process.spawn_again()
    }

    /// Waits until a server started with [`spawn_again`](Self::spawn_again) answers.
    pub(crate) fn wait_ready(&mut self, deadline: std::time::Instant) -> io::Result<()> {
        self.process.wait_ready(deadline)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered. Unix only; on
    /// Linux it returns once every thread of the server has stopped.
    ///
    /// # Panics
    ///
    /// If the server has not stopped 10 seconds after the signal (see
    /// [`try_pause`](Self::try_pause)).
    #[cfg(unix)]
    pub fn pause(&mut self) {
        if let Err(error) = self.try_pause() {
            panic!("cannot pause the server at {}: {error}", self.addr());
        }
    }

    /// Like [`pause`](Self::pause), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// `TimedOut` if, on Linux, some thread of the server has still not stopped 10 seconds
    /// after SIGSTOP; the server is then left marked paused, so `resume` or `stop` still work.
    #[cfg(unix)]
    pub fn try_pause(&mut self) -> io::Result<()> {
        self.process.pause()
    }

    /// Lets a paused server answer again (SIGCONT). Unix only.
    #[cfg(unix)]
    pub fn resume(&mut self) {
        self.process.resume();
    }

    /// Whether the process is alive (a paused process is alive).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl<K> fmt::Debug for Server<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = std::any::type_name::<K>()
            .rsplit("::")
            .next()
            .unwrap_or("?");
        f.debug_struct("Server")
            .field("engine", &engine)
            .field("addr", &self.addr())
            .field("data_dir", &self.data_dir())
            .finish_non_exhaustive()
    }
}
