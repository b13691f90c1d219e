//! A private single-member `etcd` cluster on loopback.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::process::{self, ServerProcess, ServerSpec};
use crate::server::Server;

/// How long [`EtcdServer::http`] waits for a response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd engine: a single-member cluster that persists every acknowledged write in its
/// write-ahead log before answering, so [`restart`](Server::restart), and
/// [`kill`](Server::kill) followed by `restart`, keeps them.
#[derive(Debug)]
pub enum Etcd {}

/// An `etcd` member on free loopback client and peer ports, removed with its data when dropped.
/// [`addr`](Server::addr) is the client address.
pub type EtcdServer = Server<Etcd>;

impl Server<Etcd> {
    /// Starts a member, or prints a skip line and returns `None` when `etcd` is not installed
    /// (see the crate docs for `INFRA_REQUIRE_SERVERS`).
    ///
    /// # Panics
    ///
    /// If the binary exists but the server cannot be started.
    pub fn start() -> Option<Self> {
        let binary = process::locate_or_skip("etcd", "etcd")?;
        let server =
            Self::start_with(&binary).unwrap_or_else(|error| panic!("etcd did not start: {error}"));
        Some(server)
    }

    fn start_with(binary: &Path) -> io::Result<Self> {
        let process = ServerProcess::launch("infra-etcd-", |dir| {
            let client_port = process::free_loopback_port()?;
            let peer_port = process::free_loopback_port()?;
            Ok(ServerSpec {
                binary: binary.to_path_buf(),
                args: etcd_args(client_port, peer_port, dir),
                probe: healthy,
                probe_addr: process::loopback(client_port),
            })
        })?;
        Ok(Self::new(process))
    }

    /// The client URL, `http://127.0.0.1:PORT`, as etcd clients take it as an endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Sends one HTTP/1.1 request to the client port and returns the status code and body.
    ///
    /// Enough to drive etcd's JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`) in tests without
    /// an etcd client crate.
    pub fn http(&self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        http(self.addr(), method, path, body)
    }
}

fn etcd_args(client_port: u16, peer_port: u16, dir: &Path) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name".into(),
        "infra-test".into(),
        "--data-dir".into(),
        dir.join("member").display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer.clone(),
        "--initial-cluster".into(),
        format!("infra-test={peer}"),
        "--initial-cluster-state".into(),
        "new".into(),
    ]
}

fn healthy(addr: SocketAddr) -> io::Result<()> {
    let (status, body) = http(addr, "GET", "/health", "")?;
    if status == 200 && body.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(io::Error::other(format!("not healthy: {status} {body}")))
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, RESPONSE_TIMEOUT)?;
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("malformed HTTP response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    // `Connection: close` responses from etcd's gateway may still be chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (tail.get(..size), tail.get(size..)) else {
            break;
        };
        if size == 0 {
            break;
        }
        body.push_str(chunk);
        rest = after.trim_start_matches("\r\n");
    }
    body
}
