//! A private `redis-server` on loopback.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::process::{self, ServerProcess, ServerSpec};
use crate::server::Server;

/// How long [`RedisServer::command`] waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis engine: `redis-server` with an append-only file fsynced after every write, so
/// [`restart`](Server::restart), and even [`kill`](Server::kill) followed by `restart`, keeps
/// every acknowledged write, as a durable production setup would.
#[derive(Debug)]
pub enum Redis {}

/// A `redis-server` process on a free loopback port, removed with its data when dropped.
pub type RedisServer = Server<Redis>;

impl Server<Redis> {
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
        Ok(Self::new(process))
    }

    /// The server's `redis://127.0.0.1:PORT` URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `$5`, `-ERR ...`).
    ///
    /// A minimal client for tests that need to poke the server (flush it, read a counter)
    /// without depending on a Redis client crate.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        command(self.addr(), args)
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
