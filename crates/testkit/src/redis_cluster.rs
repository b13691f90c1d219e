//! A private Redis Cluster of several masters on loopback.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::RedisServer;
use crate::process::{self, POLL_INTERVAL, Port, STARTUP_TIMEOUT, ServerProcess};
use crate::redis::{self, Reply};
use crate::server::Server;

/// The number of hash slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// How many `MOVED` redirections [`RedisCluster::command`] follows.
const MAX_REDIRECTS: usize = 3;

/// Several `redis-server` masters forming one Redis Cluster on loopback, without replicas.
///
/// Each node is an ordinary [`RedisServer`] started with `--cluster-enabled yes`; the hash slots
/// are split into equal contiguous ranges, node `i` owning the `i`-th (`CLUSTER ADDSLOTSRANGE`),
/// and the nodes are introduced with `CLUSTER MEET`. [`start`](Self::start) returns once every
/// node reports `cluster_state:ok`. [`node_mut`](Self::node_mut) gives a node to kill, restart,
/// pause or resume; a restarted node keeps its identity and slots (its `nodes.conf` and
/// append-only file live in its data directory). All nodes are stopped and their data removed
/// on drop.
///
/// ```no_run
/// use infra_testkit::RedisCluster;
///
/// let Some(cluster) = RedisCluster::start(3) else { return };
/// let urls = cluster.urls(); // give these to the cluster client under test
/// assert_eq!(cluster.command(&["SET", "k", "v"]).unwrap(), "+OK"); // follows MOVED
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts a cluster of `masters` nodes and waits until every node reports
    /// `cluster_state:ok`. Prints a skip line and returns `None` when `redis-server` is not
    /// installed, like [`RedisServer::start`].
    ///
    /// # Panics
    ///
    /// If `masters` is zero or more than the 16384 hash slots, or if the binary exists but the
    /// cluster cannot be formed.
    pub fn start(masters: usize) -> Option<Self> {
        assert!(
            (1..=SLOTS).contains(&masters),
            "a Redis cluster has between 1 and {SLOTS} masters, not {masters}"
        );
        let binary = process::locate_or_skip("redis-server", "Redis cluster")?;
        let nodes = (0..masters)
            .map(|_| {
                ServerProcess::launch("infra-redis-cluster-", |dir| {
                    let port = Port::free()?;
                    let bus = Port::free()?;
                    let mut args = redis::redis_args(port.number(), dir);
                    args.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-port",
                            &bus.number().to_string(),
                            // Long enough that a loaded machine does not mark live nodes failed.
                            "--cluster-node-timeout",
                            "5000",
                        ]
                        .map(str::to_owned),
                    );
                    Ok(redis::spec(&binary, args, vec![port, bus]))
                })
                .map(Server::new)
            })
            .collect::<io::Result<Vec<RedisServer>>>()
            .unwrap_or_else(|error| panic!("redis-server did not start: {error}"));
        let cluster = Self { nodes };
        cluster
            .form()
            .unwrap_or_else(|error| panic!("Redis cluster did not form: {error}"));
        Some(cluster)
    }

    /// Assigns the slots, introduces the nodes to the first one and waits for agreement.
    fn form(&self) -> io::Result<()> {
        for (index, node) in self.nodes.iter().enumerate() {
            let (first, last) = slot_range(index, self.nodes.len());
            expect_ok(
                node,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let Some((first, others)) = self.nodes.split_first() else {
            return Ok(());
        };
        for node in others {
            let bus = match node.request(&["CONFIG", "GET", "cluster-port"])? {
                Reply::Array(Some(items)) => items.get(1).and_then(Reply::text),
                _ => None,
            }
            .ok_or_else(|| io::Error::other("no cluster-port in CONFIG GET"))?;
            let port = node.addr().port().to_string();
            expect_ok(first, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus])?;
        }
        self.wait_until_ok()
    }

    /// The nodes; node `i` owns the `i`-th of equal contiguous slot ranges.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, to kill, restart, pause or resume it.
    ///
    /// # Panics
    ///
    /// If `index` is not below the number of nodes.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Server::addr).collect()
    }

    /// Every node's `redis://127.0.0.1:PORT` URL, the seed list cluster clients take.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Waits (up to a minute) until every node reports `cluster_state:ok`, knows every other
    /// node, and agrees on their configuration epochs, for instance after restarting one.
    ///
    /// The epochs matter to a test that moves a slot by hand (`CLUSTER SETSLOT`): the master
    /// that takes the slot over raises its epoch above every epoch it knows, and only then do
    /// the other masters prefer its claim to the old owner's. Right after `CLUSTER MEET` the
    /// nodes still share epoch 0 and settle the collision over a few heartbeats; a slot moved
    /// before that can end with each master sending `MOVED` to the other.
    pub fn wait_until_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        for node in &self.nodes {
            loop {
                let info = node
                    .request(&["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|reply| reply.text())
                    .unwrap_or_default();
                let ok = info.lines().any(|line| line == "cluster_state:ok")
                    && info.lines().any(|line| line == known);
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} never reported a healthy cluster: {info}", node.addr()),
                    ));
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        loop {
            let views = self
                .nodes
                .iter()
                .map(|node| {
                    let nodes = node.request(&["CLUSTER", "NODES"])?.text();
                    Ok(nodes.as_deref().and_then(config_epochs))
                })
                .collect::<io::Result<Vec<_>>>()?;
            let settled = views.first().is_some_and(|first| {
                first.as_ref().is_some_and(|epochs| all_distinct(epochs))
                    && views.iter().all(|view| view == first)
            });
            if settled {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the nodes never agreed on distinct epochs: {views:?}"),
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The index of the node that owns `key`'s hash slot (`CLUSTER KEYSLOT`).
    pub fn node_for_key(&self, key: &str) -> io::Result<usize> {
        match self.ask_any(&["CLUSTER", "KEYSLOT", key])? {
            Reply::Integer(slot) => usize::try_from(slot)
                .ok()
                .and_then(|slot| {
                    (0..self.nodes.len()).find(|&index| {
                        let (first, last) = slot_range(index, self.nodes.len());
                        (first..=last).contains(&slot)
                    })
                })
                .ok_or_else(|| io::Error::other(format!("slot {slot} out of range"))),
            other => Err(io::Error::other(format!(
                "CLUSTER KEYSLOT said {}",
                other.first_line()
            ))),
        }
    }

    /// Sends one command to the cluster, following `MOVED` redirections to the node that owns
    /// the key, and returns the first line of the reply, like [`RedisServer::command`].
    ///
    /// Starts at the first running node that answers. Redirections are followed only to this
    /// cluster's own nodes, and a stopped or killed node is never contacted (another process
    /// may hold its port): a redirection to it fails with `NotConnected`.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut reply = self.ask_any(args)?;
        for _ in 0..MAX_REDIRECTS {
            let Reply::Error(error) = &reply else {
                break;
            };
            let Some(target) = moved_target(error) else {
                break;
            };
            let node = self
                .nodes
                .iter()
                .find(|node| node.addr() == target)
                .ok_or_else(|| io::Error::other(format!("MOVED to a stranger: {error}")))?;
            reply = node.request(args)?;
        }
        Ok(reply.first_line())
    }

    /// Sends `args` to the first running node that answers as itself.
    fn ask_any(&self, args: &[&str]) -> io::Result<Reply> {
        let mut last_error = io::Error::other("the cluster has no nodes");
        for node in &self.nodes {
            match node.request(args) {
                Ok(reply) => return Ok(reply),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

/// The first and last slot node `index` of `nodes` owns.
fn slot_range(index: usize, nodes: usize) -> (usize, usize) {
    (index * SLOTS / nodes, (index + 1) * SLOTS / nodes - 1)
}

/// Every node's id and configuration epoch in a `CLUSTER NODES` reply (fields 1 and 7 of
/// each line), sorted by id; `None` if a line is not of that form.
fn config_epochs(nodes: &str) -> Option<Vec<(String, u64)>> {
    let mut epochs = nodes
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.to_owned();
            let epoch = fields.nth(5)?.parse().ok()?;
            Some((id, epoch))
        })
        .collect::<Option<Vec<_>>>()?;
    epochs.sort();
    Some(epochs)
}

/// Whether no two nodes share an epoch.
fn all_distinct(epochs: &[(String, u64)]) -> bool {
    let mut seen: Vec<u64> = epochs.iter().map(|&(_, epoch)| epoch).collect();
    seen.sort_unstable();
    seen.windows(2).all(|pair| pair[0] != pair[1])
}

/// The address in a `MOVED <slot> <ip>:<port>` error.
fn moved_target(error: &str) -> Option<SocketAddr> {
    let mut words = error.split(' ');
    if words.next()? != "MOVED" {
        return None;
    }
    words.nth(1)?.parse().ok()
}

fn expect_ok(node: &RedisServer, args: &[&str]) -> io::Result<()> {
    match node.request(args)? {
        Reply::Simple(ok) if ok == "OK" => Ok(()),
        other => Err(io::Error::other(format!(
            "{} at {}: {}",
            args.join(" "),
            node.addr(),
            other.first_line()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_cover_every_slot_once() {
        for nodes in [1, 2, 3, 5, 7] {
            let mut next = 0;
            for index in 0..nodes {
                let (first, last) = slot_range(index, nodes);
                assert_eq!(first, next, "gap or overlap before node {index} of {nodes}");
                assert!(last >= first);
                next = last + 1;
            }
            assert_eq!(next, SLOTS);
        }
    }

    /// A cluster of one fake node: a running child process (`sleep`) and a listener that
    /// answers `INFO` with that child's process id and every other command with `reply`.
    #[cfg(unix)] // `sh`
    fn fake_cluster(reply: &'static [u8]) -> RedisCluster {
        use std::io::{Read, Write};

        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut process = ServerProcess::prepare("infra-unit-", |_| {
            Ok(crate::process::ServerSpec {
                binary: "sh".into(),
                args: vec!["-c".into(), "exec sleep 600".into()],
                probe: Box::new(|_, _| crate::process::Probe::NotReady("fake".into())),
                probe_addr: addr,
                ports: Vec::new(),
            })
        })
        .unwrap();
        process.spawn().unwrap();
        let pid = process.pid().unwrap();
        let info = format!("process_id:{pid}\r\n");
        let info: &'static [u8] = format!("${}\r\n{info}\r\n", info.len()).leak().as_bytes();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buffer = [0; 1024];
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    let is_info = buffer[..read].windows(4).any(|word| word == b"INFO");
                    if stream
                        .write_all(if is_info { info } else { reply })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        RedisCluster {
            nodes: vec![Server::new(process)],
        }
    }

    #[cfg(unix)]
    #[test]
    fn redirections_are_followed_only_to_own_nodes() {
        let stranger = fake_cluster(b"-MOVED 866 127.0.0.1:1\r\n");
        let error = stranger.command(&["GET", "k"]).unwrap_err();
        assert!(error.to_string().contains("MOVED to a stranger"), "{error}");
        let plain = fake_cluster(b"$3\r\nabc\r\n");
        assert_eq!(plain.command(&["GET", "k"]).unwrap(), "$3");
    }

    #[test]
    fn config_epochs_are_read_from_cluster_nodes() {
        let nodes = "b2 127.0.0.1:7001@17001 master - 0 1796402887292 0 connected 5461-10921\n\
                     a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 14604\n";
        let epochs = config_epochs(nodes).unwrap();
        assert_eq!(epochs, [("a1".to_owned(), 1), ("b2".to_owned(), 0)]);
        assert!(all_distinct(&epochs));
        let colliding = "a1 127.0.0.1:7000@17000 myself,master - 0 0 0 connected\n\
                         b2 127.0.0.1:7001@17001 master - 0 1796402887292 0 connected\n";
        assert!(!all_distinct(&config_epochs(colliding).unwrap()));
        assert_eq!(
            config_epochs("a1 127.0.0.1:7000 master - 0 0 x connected"),
            None
        );
        assert_eq!(config_epochs("a1 127.0.0.1:7000"), None);
    }

    #[test]
    fn moved_errors_name_the_owner() {
        assert_eq!(
            moved_target("MOVED 3999 127.0.0.1:6381"),
            Some(SocketAddr::from(([127, 0, 0, 1], 6381)))
        );
        assert_eq!(moved_target("ASK 3999 127.0.0.1:6381"), None);
        assert_eq!(moved_target("MOVED 3999"), None);
        assert_eq!(moved_target("MOVED 3999 not-an-addr"), None);
    }
}
