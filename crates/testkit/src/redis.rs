//! A private `redis-server` on loopback, and the few RESP bits the test kit speaks to it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::process::{self, Port, Probe, ServerProcess, ServerSpec};
use crate::server::Server;

/// How long [`RedisServer::command`] waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Replies larger than this are refused rather than buffered.
const MAX_BULK_LEN: usize = 64 << 20;
/// Nesting deeper than this is refused rather than followed.
const MAX_DEPTH: usize = 8;

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
    /// The server is confirmed to be the process just spawned (its `INFO server` process id)
    /// before `start` returns, so a server another test started on the same port is never
    /// mistaken for it; a lost port race is retried on fresh ports.
    ///
    /// # Panics
    ///
    /// If the binary exists but the server cannot be started: that is a broken machine, not a
    /// reason to skip.
    pub fn start() -> Option<Self> {
        let binary = process::locate_or_skip("redis-server", "Redis")?;
        let process = ServerProcess::launch("infra-redis-", |dir| {
            let port = Port::free()?;
            Ok(spec(&binary, redis_args(port.number(), dir), vec![port]))
        })
        .unwrap_or_else(|error| panic!("redis-server did not start: {error}"));
        Some(Self::new(process))
    }

    /// The server's `redis://127.0.0.1:PORT` URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `$5`, `-ERR ...`).
    ///
    /// A minimal client for tests that need to poke the server (flush it, read a counter)
    /// without depending on a Redis client crate. The whole reply is read; only its first line
    /// is returned.
    ///
    /// It talks only to our own process: while the server is stopped or killed this fails with
    /// `NotConnected` (another process may have taken the port), and on each connection the
    /// server's `INFO server` process id is checked before the command is sent.
    ///
    /// # Errors
    ///
    /// `NotConnected` if the server is not running, `AddrInUse` if another server answers on
    /// its port, or the I/O or protocol error of the exchange (a paused server times out).
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        self.request(args).map(|reply| reply.first_line())
    }

    /// Sends one command to our own process (see [`command`](Self::command)) and reads the
    /// whole reply.
    pub(crate) fn request(&self, args: &[&str]) -> io::Result<Reply> {
        let pid = self.ensure_running()?;
        request_to(self.addr(), Some(pid), args)
    }
}

/// The spec of one server listening on `ports[0]`.
pub(crate) fn spec(binary: &Path, args: Vec<String>, ports: Vec<Port>) -> ServerSpec {
    let probe_addr = ports
        .first()
        .map_or_else(|| process::loopback(0), Port::addr);
    ServerSpec {
        binary: binary.to_path_buf(),
        args,
        probe: Box::new(probe),
        probe_addr,
        ports,
    }
}

pub(crate) fn redis_args(port: u16, dir: &Path) -> Vec<String> {
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

/// Ready when the server at `addr` is process `pid` and answers PING.
fn probe(addr: SocketAddr, pid: u32) -> Probe {
    let info = match request(addr, &["INFO", "server"]) {
        Ok(Reply::Bulk(Some(info))) => String::from_utf8_lossy(&info).into_owned(),
        Ok(other) => return Probe::NotReady(other.first_line()),
        Err(error) => return Probe::NotReady(error.to_string()),
    };
    match process_id(&info) {
        Some(id) if id == pid => {}
        Some(id) => return Probe::Stranger(format!("redis-server with process id {id}")),
        None => return Probe::Stranger("a server without a process id in INFO".into()),
    }
    match request(addr, &["PING"]) {
        Ok(Reply::Simple(pong)) if pong == "PONG" => Probe::Ready,
        // Redis answers `-LOADING` while it replays the append-only file after a restart.
        Ok(other) => Probe::NotReady(other.first_line()),
        Err(error) => Probe::NotReady(error.to_string()),
    }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply's first line on the wire, without the line ending.
    pub(crate) fn first_line(&self) -> String {
        match self {
            Self::Simple(text) => format!("+{text}"),
            Self::Error(text) => format!("-{text}"),
            Self::Integer(value) => format!(":{value}"),
            Self::Bulk(Some(bytes)) => format!("${}", bytes.len()),
            Self::Bulk(None) => "$-1".into(),
            Self::Array(Some(items)) => format!("*{}", items.len()),
            Self::Array(None) => "*-1".into(),
        }
    }

    /// The reply as text when it is a bulk string.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Self::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to `addr` on a fresh connection and reads the whole reply.
pub(crate) fn request(addr: SocketAddr, args: &[&str]) -> io::Result<Reply> {
    request_to(addr, None, args)
}

/// Like [`request`], but when `pid` is given first checks on the same connection that the
/// server is that process, and sends nothing else to a stranger.
fn request_to(addr: SocketAddr, pid: Option<u32>, args: &[&str]) -> io::Result<Reply> {
    let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    if let Some(pid) = pid {
        reader.get_mut().write_all(&encode(&["INFO", "server"]))?;
        let info = read_reply(&mut reader, 0)?;
        let answering = info.text().as_deref().and_then(process_id);
        if answering != Some(pid) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{addr} is answered by another server ({}), not process {pid}",
                    answering.map_or_else(|| info.first_line(), |id| format!("process id {id}"))
                ),
            ));
        }
    }
    reader.get_mut().write_all(&encode(args))?;
    read_reply(&mut reader, 0)
}

/// The `process_id` field of an `INFO server` reply.
fn process_id(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|id| id.trim().parse().ok())
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one reply. Malformed, oversized or too deeply nested input is an error.
fn read_reply(reader: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(invalid("reply nested too deeply"));
    }
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| invalid("reply line without CRLF"))?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| invalid("empty line"))?;
    let length = || -> io::Result<Option<usize>> {
        let value: i64 = rest
            .parse()
            .map_err(|_| invalid(format!("bad length {rest:?}")))?;
        match value {
            -1 => Ok(None),
            0.. => usize::try_from(value)
                .ok()
                .filter(|&len| len <= MAX_BULK_LEN)
                .map(Some)
                .ok_or_else(|| invalid(format!("length {value} too large"))),
            _ => Err(invalid(format!("bad length {value}"))),
        }
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| invalid(format!("bad integer {rest:?}"))),
        "$" => {
            let Some(len) = length()? else {
                return Ok(Reply::Bulk(None));
            };
            let mut bytes = vec![0; len + 2];
            reader.read_exact(&mut bytes)?;
            if !bytes.ends_with(b"\r\n") {
                return Err(invalid("bulk string without CRLF"));
            }
            bytes.truncate(len);
            Ok(Reply::Bulk(Some(bytes)))
        }
        "*" => {
            let Some(len) = length()? else {
                return Ok(Reply::Array(None));
            };
            let items = (0..len)
                .map(|_| read_reply(reader, depth + 1))
                .collect::<io::Result<_>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(invalid(format!("unknown reply type {kind:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut io::Cursor::new(bytes), 0)
    }

    #[test]
    fn replies_of_every_type_are_read_whole() {
        let cases: [(&[u8], Reply); 7] = [
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-ERR no\r\n", Reply::Error("ERR no".into())),
            (b":-7\r\n", Reply::Integer(-7)),
            (b"$5\r\nhe\r\no\r\n", Reply::Bulk(Some(b"he\r\no".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n:1\r\n$1\r\nx\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Bulk(Some(b"x".to_vec())),
                ])),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes).unwrap(), expected, "{bytes:?}");
        }
        assert_eq!(parse(b"$5\r\nhello\r\n").unwrap().first_line(), "$5");
        assert_eq!(
            parse(b"$5\r\nhello\r\n").unwrap().text().as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let nested = b"*1\r\n".repeat(MAX_DEPTH + 2);
        let cases: [&[u8]; 11] = [
            b"",
            b"+OK",
            b"\r\n",
            b"?x\r\n",
            b":x\r\n",
            b"$-2\r\n",
            b"$99999999999999999999\r\n",
            b"$70000000\r\n",
            b"$3\r\nab\r\n",
            b"$2\r\nabcd",
            &nested,
        ];
        for bytes in cases {
            assert!(parse(bytes).is_err(), "{bytes:?} was accepted");
        }
    }

    #[test]
    fn the_probe_accepts_only_the_process_it_was_given() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let pid = redis.pid().unwrap();
        assert!(matches!(probe(redis.addr(), pid), Probe::Ready));
        match probe(redis.addr(), pid + 1) {
            Probe::Stranger(who) => assert!(who.contains(&pid.to_string()), "{who}"),
            other => panic!("another pid's server was taken for ours: {other:?}"),
        }
    }

    #[test]
    fn a_lost_port_race_is_retried_on_a_fresh_port() {
        let Some(stranger) = RedisServer::start() else {
            return;
        };
        let binary = process::locate_or_skip("redis-server", "Redis").unwrap();
        let attempts = std::cell::Cell::new(0);
        // The first attempt is handed the port the stranger already holds, as if the stranger
        // had bound it between our reservation and our server's bind.
        let process = ServerProcess::launch("infra-redis-", |dir| {
            attempts.set(attempts.get() + 1);
            if attempts.get() == 1 {
                let mut spec = spec(&binary, redis_args(stranger.addr().port(), dir), Vec::new());
                spec.probe_addr = stranger.addr();
                return Ok(spec);
            }
            let port = Port::free()?;
            Ok(spec(&binary, redis_args(port.number(), dir), vec![port]))
        })
        .unwrap();
        assert_eq!(attempts.get(), 2);
        assert_ne!(process.addr(), stranger.addr());
        assert_ne!(process.pid(), stranger.pid());
        let ours = Server::<Redis>::new(process);
        ours.command(&["SET", "only-ours", "1"]).unwrap();
        assert_eq!(stranger.command(&["EXISTS", "only-ours"]).unwrap(), ":0");
    }

    #[test]
    fn commands_are_encoded_as_bulk_arrays() {
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(
            encode(&["SET", "", "é"]),
            "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$2\r\né\r\n".as_bytes()
        );
    }
}
