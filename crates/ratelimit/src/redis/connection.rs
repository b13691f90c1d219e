//! One multiplexed connection (or one cluster client) shared by every check, and what its
//! errors mean.
//!
//! A single server is reached through the `redis` crate's `ConnectionManager`: one TCP
//! connection on which concurrent checks are pipelined, replaced in the background when it
//! drops. It makes one connection attempt each time it is asked to reconnect; the back-off
//! between attempts while Redis is down is the circuit breaker's (see `breaker.rs`), which runs
//! on the limiter's clock. A server that answers `READONLY` has been made a replica (a failover
//! demoted it): the connection manager would keep talking to it, so its connection is replaced
//! by a new one, which the next check opens to whatever the URL names then. A cluster is
//! reached through the crate's async cluster client, which keeps one such connection per
//! master, follows `MOVED` and `ASK` redirections, refreshes its slot map by itself, and does
//! so on `READONLY` too. It does not say which master serves a slot, which the breakers need
//! (one per master, see `node_breakers.rs`): the limiter asks the cluster (`CLUSTER SLOTS`).
//!
//! Either is replaced as a whole after a check got no answer on it within its timeout:
//! silence is all a dead peer or a partition shows, and neither replaces a connection until
//! it sees an error (the cluster client retries a timed-out request on the same connection).
//! A new cluster client connects to every master before serving any, so its connection
//! attempts get a quarter of the timeout each: a master that stays silent must not make the
//! others' checks time out too.

use std::time::Duration;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::keys::CLUSTER_SLOTS;
use super::scripts::Script;

/// Where the limiter's keys live.
pub(crate) enum Endpoint<'a> {
    /// One server (or a proxy in front of several), by URL.
    Single(&'a str),
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster(Vec<&'a str>),
}

/// The shared connection.
pub(crate) enum Transport {
    /// Boxed: the client and its configuration are ten times the cluster handle's size.
    Single(Box<SingleServer>),
    Cluster(Box<ClusterNodes>),
}

/// A connection every check clones, with how many times it was replaced: a check replaces
/// only the connection it used, so many checks that find it unusable at once open one new
/// connection, and checks in flight on the old one finish on it.
struct Pooled<C>(Mutex<(u64, C)>);

impl<C: Clone> Pooled<C> {
    fn new(connection: C) -> Self {
        Self(Mutex::new((0, connection)))
    }

    /// The connection to use now, and its generation.
    fn get(&self) -> (u64, C) {
        self.0.lock().clone()
    }

    fn generation(&self) -> u64 {
        self.0.lock().0
    }

    /// Puts what `fresh` makes in place of the connection if it is still generation `used`.
    fn replace(&self, used: u64, fresh: impl FnOnce() -> Option<C>) {
        let mut pooled = self.0.lock();
        if pooled.0 != used {
            return;
        }
        if let Some(fresh) = fresh() {
            *pooled = (used + 1, fresh);
        }
    }
}

/// One server's pooled connection, replaced when the server turns out to be a replica or
/// stops answering.
pub(crate) struct SingleServer {
    client: redis::Client,
    config: ConnectionManagerConfig,
    pooled: Pooled<ConnectionManager>,
}

impl SingleServer {
    fn open(url: &str, config: ConnectionManagerConfig) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            client,
            config,
            pooled: Pooled::new(manager),
        })
    }

    async fn query(&self, command: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut connection) = self.pooled.get();
        let result = command.query_async(&mut connection).await;
        if let Err(error) = &result
            && is_read_only(error)
        {
            self.replace(generation);
        }
        result
    }

    /// Drops the pooled connection if it is still generation `used`: the next check connects
    /// afresh, through the same URL.
    fn replace(&self, used: u64) {
        // A lazy manager only parses its configuration here; should that ever fail, the old
        // connection stays, and the next failure tries again.
        self.pooled.replace(used, || {
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()).ok()
        });
    }
}

/// A cluster's pooled client connection (one connection per node inside), replaced when a
/// node stops answering.
pub(crate) struct ClusterNodes {
    client: ClusterClient,
    pooled: Pooled<ClusterConnection>,
}

impl ClusterNodes {
    fn connect(client: &ClusterClient) -> ClusterConnection {
        client.get_pending_async_connection_with_config(ClusterConfig::new())
    }
}

/// Slots `first..=last` of a cluster and the master serving them, named by its node id (or,
/// from a server too old to send one, by its `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) master: String,
}

impl SlotRange {
    /// One entry of a `CLUSTER SLOTS` reply: first and last slot, then the master's host,
    /// port and node id (then its replicas, unused here); `None` for anything else.
    fn parse(entry: &Value) -> Option<Self> {
        let Value::Array(fields) = entry else {
            return None;
        };
        let slot = |field: Option<&Value>| match field {
            Some(Value::Int(slot)) => u16::try_from(*slot).ok().filter(|&s| s < CLUSTER_SLOTS),
            _ => None,
        };
        let (first, last) = (slot(fields.first())?, slot(fields.get(1))?);
        let Some(Value::Array(master)) = fields.get(2) else {
            return None;
        };
        if first > last {
            return None;
        }
        Some(Self {
            first,
            last,
            master: master_name(master)?,
        })
    }
}

/// What names a master of a `CLUSTER SLOTS` entry: its node id, which stays the same however
/// the node announces itself (a cluster announcing no endpoint sends a null host, meaning
/// "where you asked"); `host:port` from a server that sends no id.
fn master_name(master: &[Value]) -> Option<String> {
    if let Some(id) = master.get(2).and_then(text) {
        return Some(id);
    }
    let host = master.first().and_then(text)?;
    let Some(Value::Int(port)) = master.get(1) else {
        return None;
    };
    Some(format!("{host}:{port}"))
}

/// A reply's string, if it is one.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// Whether `error` is a replica refusing a write: the server is no longer the primary.
fn is_read_only(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

impl Transport {
    /// Prepares the connection without connecting: the first check connects. Must run inside
    /// a tokio runtime, which the connection's background tasks are spawned on.
    pub(crate) fn open(endpoint: &Endpoint<'_>, timeout: Duration) -> Result<Self, RedisError> {
        match endpoint {
            Endpoint::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    // The check's own deadline bounds the wait for a reply; a late reply is
                    // still read off the shared connection, which stays usable.
                    .set_response_timeout(None)
                    .set_number_of_retries(0);
                Ok(Self::Single(Box::new(SingleServer::open(url, config)?)))
            }
            Endpoint::Cluster(urls) => {
                // Redirections and TRYAGAIN are retried after 5 ms, doubling, within the
                // check's timeout (the client's default first wait is 1.28 s).
                let most = u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(10);
                // A client connects to every master before it serves any (when it starts and
                // when it learns the slots), and is replaced as a whole after a check timed
                // out: each connection attempt gets a quarter of the timeout, so that a check
                // on a live master, on a client replaced because another fell silent, still
                // gets its answer in time.
                let client = ClusterClientBuilder::new(urls.iter().copied())
                    .connection_timeout(timeout / 4)
                    .response_timeout(timeout)
                    .min_retry_wait(5)
                    .max_retry_wait(most)
                    .retry_wait_formula(5, 2)
                    .build()?;
                let pooled = Pooled::new(ClusterNodes::connect(&client));
                Ok(Self::Cluster(Box::new(ClusterNodes { client, pooled })))
            }
        }
    }

    async fn query(&self, command: &Cmd) -> Result<Value, RedisError> {
        match self {
            Self::Single(server) => server.query(command).await,
            Self::Cluster(nodes) => command.query_async(&mut nodes.pooled.get().1).await,
        }
    }

    /// Whether this is a cluster, whose slots are spread over masters.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The cluster's slot ranges and their masters, as the master serving `slot` tells them
    /// (`CLUSTER SLOTS`): that is where the check asking is going anyway. Counts the command in
    /// `sent`. Entries that are not slot ranges are skipped, so the map holds at most one range
    /// per slot. Empty for a single server.
    pub(crate) async fn slot_ranges(
        &self,
        slot: u16,
        sent: &AtomicU64,
    ) -> Result<Vec<SlotRange>, RedisError> {
        let Self::Cluster(nodes) = self else {
            return Ok(Vec::new());
        };
        sent.fetch_add(1, Ordering::Relaxed);
        let mut command = redis::cmd("CLUSTER");
        command.arg("SLOTS");
        let serving = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        let reply = nodes
            .pooled
            .get()
            .1
            .route_command(command, RoutingInfo::SingleNode(serving))
            .await?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        Ok(entries
            .iter()
            .filter_map(SlotRange::parse)
            .take(usize::from(CLUSTER_SLOTS))
            .collect())
    }

    /// Which pooled connection checks use now, to name it to [`Transport::abandon`].
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Self::Single(server) => server.pooled.generation(),
            Self::Cluster(nodes) => nodes.pooled.generation(),
        }
    }

    /// Gives up the pooled connection `generation` (if it is still the pooled one) after a
    /// check got no answer on it within its timeout: a connection whose peer died without a
    /// reset, or that a partition cut, shows no error, only silence, and neither the
    /// connection manager nor the cluster client (which retries a timed-out request on the
    /// same node connection) would replace it until TCP gives up, many minutes later. The
    /// next check connects afresh (to a cluster: to its nodes, learning the slots again);
    /// checks in flight on the old connection finish on it.
    pub(crate) fn abandon(&self, generation: u64) {
        match self {
            Self::Single(server) => server.replace(generation),
            Self::Cluster(nodes) => nodes
                .pooled
                .replace(generation, || Some(ClusterNodes::connect(&nodes.client))),
        }
    }

    /// Runs `script` by hash, and by source if the server does not know it (after a restart
    /// or `SCRIPT FLUSH`, or on a cluster node that never ran it), which also loads it there.
    /// Counts every command sent in `sent`.
    pub(crate) async fn eval(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
        sent: &AtomicU64,
    ) -> Result<Value, RedisError> {
        let command = |name: &str, body: &str| {
            sent.fetch_add(1, Ordering::Relaxed);
            let mut command = redis::cmd(name);
            command.arg(body).arg(keys.len()).arg(keys).arg(args);
            command
        };
        match self.query(&command("EVALSHA", &script.hash)).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.query(&command("EVAL", script.source)).await
            }
            other => other,
        }
    }
}

/// Why a check got no answer it can use.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer within the check's timeout.
    Timeout,
    /// No usable connection: refused, reset, closed, or not yet re-established.
    Connection(RedisError),
    /// The server answered that it cannot serve now (loading its data, running a long
    /// script, a cluster without a majority or without this slot's master, a replica refusing
    /// the script's write after a failover demoted it, a primary without the replicas it is
    /// told to write with).
    ServerUnavailable(RedisError),
    /// The server refused the request itself: out of memory, a key of the wrong type, a
    /// script error, no permission.
    Rejected(RedisError),
    /// A reply the scripts never give (another program wrote the record key, say).
    Malformed(String),
}

impl Failure {
    /// Sorts an error of the `redis` crate.
    pub(crate) fn of(error: RedisError) -> Self {
        match error.kind() {
            ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => {
                if error.is_timeout() {
                    Self::Timeout
                } else {
                    Self::Connection(error)
                }
            }
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly,
            ) => Self::ServerUnavailable(error),
            // `BUSY`: another script has run past its time limit; the server serves nothing else.
            // `NOREPLICAS`: a primary set to write only with enough replicas in sync has lost
            // them; it serves writes again when they are back, as after `MASTERDOWN`.
            ErrorKind::Extension if matches!(error.code(), Some("BUSY" | "NOREPLICAS")) => {
                Self::ServerUnavailable(error)
            }
            _ if error.code().is_some() => Self::Rejected(error),
            _ => Self::Malformed(error.to_string()),
        }
    }

    /// Whether the failure policy answers (Redis could not be asked), rather than an error.
    pub(crate) fn is_unavailability(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Connection(_) | Self::ServerUnavailable(_)
        )
    }

    /// Whether sending the same request again may succeed where this attempt failed: its
    /// connection was lost (the request may or may not have run; the record makes a second run
    /// harmless).
    pub(crate) fn is_worth_resending(&self) -> bool {
        matches!(self, Self::Connection(_))
    }

    /// The metrics class.
    #[cfg(feature = "metrics")]
    pub(crate) fn class(&self) -> crate::metrics::RedisErrorClass {
        use crate::metrics::RedisErrorClass;
        match self {
            Self::Timeout => RedisErrorClass::Timeout,
            Self::Connection(_) => RedisErrorClass::Connection,
            Self::ServerUnavailable(_) | Self::Rejected(_) => RedisErrorClass::Server,
            Self::Malformed(_) => RedisErrorClass::Other,
        }
    }

    /// What went wrong, for an error message.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Timeout => "no answer from Redis within the timeout".to_owned(),
            Self::Connection(error) | Self::ServerUnavailable(error) | Self::Rejected(error) => {
                error.to_string()
            }
            Self::Malformed(reply) => format!("unexpected reply from Redis: {reply}"),
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    /// The error `redis` makes of a server's error line.
    fn server_error(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
            .expect("an error line parses as a value");
        value
            .extract_error()
            .expect_err("an error line is an error")
    }

    /// A `CLUSTER SLOTS` entry: the range, then the master as host, port and node id.
    fn slots_entry(first: i64, last: i64, host: Value, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![host, Value::Int(port), Value::BulkString(id.into())]),
        ])
    }

    /// A cluster announcing no endpoints (`cluster-preferred-endpoint-type unknown-endpoint`)
    /// sends a null host, meaning "where you asked": its ranges still name their masters,
    /// one apart from the other.
    #[test]
    fn a_slot_range_without_an_endpoint_still_names_its_master() {
        let a = SlotRange::parse(&slots_entry(0, 99, Value::Nil, 7000, "id-a"))
            .expect("a range with a null host is a range");
        let b = SlotRange::parse(&slots_entry(100, 199, Value::Nil, 7001, "id-b"))
            .expect("a range with a null host is a range");
        assert_eq!((a.first, a.last, b.first, b.last), (0, 99, 100, 199));
        assert_ne!(a.master, b.master);
        let host = || Value::BulkString(b"127.0.0.1".to_vec());
        let same = SlotRange::parse(&slots_entry(200, 299, host(), 7000, "id-a")).unwrap();
        assert_eq!(same.master, a.master, "one master, however it is reached");
    }

    /// Every code the docs send to the failure policy goes there; every other answer about
    /// the request is returned as an error.
    #[test]
    fn error_replies_are_sorted_as_the_docs_say() {
        let cannot_serve = [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "READONLY You can't write against a read only replica.",
            "NOREPLICAS Not enough good replicas to write.",
        ];
        for line in cannot_serve {
            let failure = Failure::of(server_error(line));
            assert!(
                matches!(failure, Failure::ServerUnavailable(_)),
                "{line}: {failure:?}"
            );
            assert!(failure.is_unavailability() && !failure.is_worth_resending());
        }
        let refused = [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR user_script:1: Script attempted to access nonexistent global variable",
            "NOPERM this user has no permissions to run the 'evalsha' command",
        ];
        for line in refused {
            let failure = Failure::of(server_error(line));
            assert!(
                matches!(failure, Failure::Rejected(_)),
                "{line}: {failure:?}"
            );
            assert!(!failure.is_unavailability());
        }
    }
}
