//! A private `redis-server` on loopback.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::process::{self, ServerProcess, ServerSpec};

/// How long [`RedisServer::command`] waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` process on a free loopback port, removed with its data when dropped.
///
/// Persistence is an append-only file with an fsync after every write, so
/// [`restart`](Self::restart) and even [`kill`](Self::kill) followed by `restart` keep every
/// acknowledged write, as a durable production setup would.
pub struct RedisServer {
    process: ServerProcess,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server, or prints a skip line and returns `None` when `redis-server` is not
    /// installed (see the crate docs for `INFRA_REQUIRE_SERVERS`).
    ///
    /// # Panics
    ///
    /// If the binary exists but the server cannot be started: that is a broken machine, not a
    /// reason to skip.
    pub fn start() -> Option<Self> {
        let binary = process::locate_or_skip("redis-server", "Redis")?;
        let server = Self::start_with(&binary)
            .unwrap_or_else(|error| panic!("redis-server did not start: {error}"));
        Some(server)
    }

    fn start_with(binary: &Path) -> io::Result<Self> {
        let process = ServerProcess::launch("infra-redis-", |dir| {
            let port = process::free_loopback_port()?;
            Ok(ServerSpec {
                binary: binary.to_path_buf(),
                args: redis_args(port, dir),
                probe: ping,
                probe_addr: process::loopback(port),
            })
        })?;
        Ok(Self {
            addr: process.addr(),
            process,
        })
    }

    /// The server's `redis://127.0.0.1:PORT` URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The server's loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The temporary data directory, removed when the server is dropped.
    pub fn data_dir(&self) -> &Path {
        self.process.data_dir()
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `$5`, `-ERR ...`).
    ///
    /// A minimal client for tests that need to poke the server (flush it, read a counter)
    /// without depending on a Redis client crate.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        command(self.addr, args)
    }

    /// Stops the server gracefully. Its port and data stay reserved for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data; waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.restart()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        self.process.pause();
    }

    /// Lets a paused server answer again (SIGCONT).
    pub fn resume(&mut self) {
        self.process.resume();
    }

    /// Whether the process is alive (a paused process is alive).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("addr", &self.addr)
            .field("data_dir", &self.process.data_dir())
            .finish_non_exhaustive()
    }
}

fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        // No RDB snapshots: the append-only file is the one source of durability.
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn ping(addr: SocketAddr) -> io::Result<()> {
    let reply = command(addr, &["PING"])?;
    if reply == "+PONG" {
        Ok(())
    } else {
        // Redis answers `-LOADING` while it replays the append-only file after a restart.
        Err(io::Error::other(format!("not ready: {reply}")))
    }
}

fn command(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    Ok(line.trim_end().to_owned())
}
