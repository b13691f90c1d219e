//! A private single-member `etcd` cluster on loopback.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::process::{self, Port, Probe, ServerProcess, ServerSpec};
use crate::server::Server;

/// How long [`EtcdServer::http`] waits for a response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a readiness or leadership probe waits: short, so a paused member costs little.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// The member is confirmed to be the one just spawned (by its unique member name) before
    /// `start` returns, so a member another test started on the same port is never mistaken
    /// for it; a lost port race is retried on fresh ports.
    ///
    /// # Panics
    ///
    /// If the binary exists but the server cannot be started.
    pub fn start() -> Option<Self> {
        let binary = process::locate_or_skip("etcd", "etcd")?;
        let process = ServerProcess::launch("infra-etcd-", |dir| {
            let member = Member::new(unique_name("member"), Port::free()?, Port::free()?);
            let cluster = member.initial_cluster_entry();
            Ok(member.spec(&binary, dir, &cluster, &unique_name("cluster")))
        })
        .unwrap_or_else(|error| panic!("etcd did not start: {error}"));
        Some(Self::new(process))
    }

    /// The client URL, `http://127.0.0.1:PORT`, as etcd clients take it as an endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Sends one HTTP/1.1 request to the client port and returns the status code and body.
    ///
    /// Enough to drive etcd's JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`) in tests without
    /// an etcd client crate.
    ///
    /// # Errors
    ///
    /// `NotConnected` while the member is stopped or killed (another process may have taken
    /// its port, and this never talks to it), or the I/O error of the exchange.
    pub fn http(&self, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
        self.ensure_running()?;
        http(self.addr(), method, path, body, RESPONSE_TIMEOUT)
    }
}

/// A name no other member on this machine has: this process's id and a counter.
pub(crate) fn unique_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("infra-{kind}-{}-{n}", std::process::id())
}

/// One etcd member's identity and ports, before it is spawned.
pub(crate) struct Member {
    pub(crate) name: String,
    client: Port,
    peer: Port,
}

impl Member {
    pub(crate) fn new(name: String, client: Port, peer: Port) -> Self {
        Self { name, client, peer }
    }

    /// This member's `name=peer-url` entry of `--initial-cluster`.
    pub(crate) fn initial_cluster_entry(&self) -> String {
        format!("{}=http://{}", self.name, self.peer.addr())
    }

    /// The spec of this member in a cluster whose `--initial-cluster` is `cluster`.
    pub(crate) fn spec(self, binary: &Path, dir: &Path, cluster: &str, token: &str) -> ServerSpec {
        let client = format!("http://{}", self.client.addr());
        let peer = format!("http://{}", self.peer.addr());
        let args = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            dir.join("member").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            cluster.to_owned(),
            "--initial-cluster-token".into(),
            token.to_owned(),
            // Ignored on a restart: an existing data directory carries the membership.
            "--initial-cluster-state".into(),
            "new".into(),
        ];
        let name = self.name;
        ServerSpec {
            binary: binary.to_path_buf(),
            args,
            probe: Box::new(move |addr, _pid| probe(addr, &name)),
            probe_addr: self.client.addr(),
            ports: vec![self.client, self.peer],
        }
    }
}

/// Ready when the member at `addr` is named `name` and reports itself healthy.
fn probe(addr: SocketAddr, name: &str) -> Probe {
    match member_name(addr) {
        Ok(answering) if answering == name => {}
        Ok(answering) => return Probe::Stranger(format!("etcd member {answering:?}")),
        Err(error) => return Probe::NotReady(error.to_string()),
    }
    match healthy(addr) {
        Ok(()) => Probe::Ready,
        Err(error) => Probe::NotReady(error.to_string()),
    }
}

/// The name of the member answering at `addr`: the member-list entry whose id is the id in the
/// response header.
fn member_name(addr: SocketAddr) -> io::Result<String> {
    let (status, body) = http(addr, "POST", "/v3/cluster/member/list", "{}", PROBE_TIMEOUT)?;
    if status != 200 {
        return Err(io::Error::other(format!("member list: {status} {body}")));
    }
    let list: serde_json::Value = serde_json::from_str(&body).map_err(io::Error::other)?;
    let own_id = &list["header"]["member_id"];
    list["members"]
        .as_array()
        .and_then(|members| members.iter().find(|member| &member["ID"] == own_id))
        .and_then(|member| member["name"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("no own name in member list {body}")))
}

/// What a member says about itself and the leader it follows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) member_id: String,
    pub(crate) leader: String,
}

/// Asks the member at `addr` for its id and its leader's (`POST /v3/maintenance/status`).
pub(crate) fn status(addr: SocketAddr) -> io::Result<Status> {
    let (code, body) = http(addr, "POST", "/v3/maintenance/status", "{}", PROBE_TIMEOUT)?;
    if code != 200 {
        return Err(io::Error::other(format!("status: {code} {body}")));
    }
    let status: serde_json::Value = serde_json::from_str(&body).map_err(io::Error::other)?;
    let field = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    match (
        field(&status["header"]["member_id"]),
        field(&status["leader"]),
    ) {
        (Some(member_id), Some(leader)) => Ok(Status { member_id, leader }),
        _ => Err(io::Error::other(format!("no ids in status {body}"))),
    }
}

fn healthy(addr: SocketAddr) -> io::Result<()> {
    let (status, body) = http(addr, "GET", "/health", "", PROBE_TIMEOUT)?;
    if status == 200 && body.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(io::Error::other(format!("not healthy: {status} {body}")))
    }
}

pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_accepts_only_the_member_it_was_given() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let name = member_name(etcd.addr()).unwrap();
        assert!(name.starts_with("infra-member-"), "{name}");
        assert!(matches!(probe(etcd.addr(), &name), Probe::Ready));
        match probe(etcd.addr(), "infra-member-someone-else") {
            Probe::Stranger(who) => assert!(who.contains(&name), "{who}"),
            other => panic!("another member was taken for ours: {other:?}"),
        }
    }

    #[test]
    fn names_are_unique_within_a_process() {
        assert_ne!(unique_name("member"), unique_name("member"));
    }

    #[test]
    fn chunked_bodies_are_joined_and_bad_sizes_stop_the_body() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(dechunk("zz\r\nhello\r\n"), "");
        assert_eq!(dechunk("ff\r\nshort"), "");
    }
}
