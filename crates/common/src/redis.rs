//! What every Redis backend needs and must get right the same way: a small pool of blocking
//! connections with timeouts, and server scripts run by hash with a fallback to their source.
//!
//! - [`Connections`]: idle connections kept for reuse. A pooled connection that turns out
//!   dead (closed while idle, as by a server restart) empties the pool, and the request is sent
//!   once more on a fresh connection only if the caller says running it twice is harmless: the
//!   server may have run it before the connection failed, and the client cannot tell.
//! - [`Script`]: a Lua script sent as `EVALSHA`, and as `EVAL` when the server answers
//!   `NOSCRIPT` (after a restart or `SCRIPT FLUSH`), which also loads it for the next calls.
//!
//! ```no_run
//! use infra_common::redis::{Connections, Script};
//! use std::time::Duration;
//!
//! let connections = Connections::open("redis://127.0.0.1:6379/", Duration::from_secs(1), 16)?;
//! // Setting a key to a value is harmless to repeat: resent after a dead pooled connection.
//! let set = Script::new("return redis.call('SET', KEYS[1], ARGV[1])", true);
//! let reply: String = connections.script(&set, &["greeting"], "hello")?;
//! assert_eq!(reply, "OK");
//! # Ok::<(), redis::RedisError>(())
//! ```

use std::fmt;
use std::time::Duration;

use redis::{Connection, FromRedisValue, RedisError, ToRedisArgs};

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU64, Ordering};

/// A pool of blocking connections to one Redis, each with read, write and connect timeouts.
pub struct Connections {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
    max_idle: usize,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("timeout", &self.timeout)
            .field("max_idle", &self.max_idle)
            .field("idle", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// A pool for `url` (`redis://host:port/db`) whose every connect, read and write gives up
    /// after `timeout`, keeping at most `max_idle` idle connections. No connection is made
    /// until the first request.
    ///
    /// # Errors
    ///
    /// A malformed URL.
    pub fn open(url: &str, timeout: Duration, max_idle: usize) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            idle: Mutex::new(Vec::new()),
            timeout,
            max_idle,
        })
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    /// Runs `request` on a pooled connection, or a new one when none is idle.
    ///
    /// If a pooled connection turns out dead, the other idle ones go too (a restarted server
    /// closed them all), and `request` runs once more on a fresh connection when `resend` says
    /// running it twice is harmless. A connection whose request failed is never pooled again: a
    /// timed-out one may still deliver its late answer to whoever sent next.
    ///
    /// # Errors
    ///
    /// What connecting or `request` returned.
    pub fn run<T>(
        &self,
        resend: bool,
        mut request: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let pooled = self.idle.lock().pop();
        let (mut connection, reused) = match pooled {
            Some(connection) => (connection, true),
            None => (self.connect()?, false),
        };
        let mut result = request(&mut connection);
        if reused && result.as_ref().is_err_and(is_dead_connection) {
            self.idle.lock().clear();
            if resend {
                connection = self.connect()?;
                result = request(&mut connection);
            }
        }
        let value = result?;
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
        Ok(value)
    }

    /// Runs `script` with `keys` and `args` on a pooled connection: one round trip, two after a
    /// `NOSCRIPT`; resent after a dead pooled connection only if the script says it may be.
    ///
    /// # Errors
    ///
    /// As [`Connections::run`], and the script's own errors.
    pub fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[impl ToRedisArgs],
        args: impl ToRedisArgs,
    ) -> Result<T, RedisError> {
        self.run(script.resend, |connection| {
            script.invoke(connection, keys, &args)
        })
    }
}

/// Whether `error` says the connection itself is gone, rather than the server refusing the
/// request or the answer being late.
fn is_dead_connection(error: &RedisError) -> bool {
    error.is_connection_dropped() || error.is_io_error() && !error.is_timeout()
}

/// A server script: its source, its SHA-1 for `EVALSHA`, whether running it twice does no
/// harm when the first run's answer was lost, and how many commands it has sent.
pub struct Script {
    source: &'static str,
    hash: redis::Script,
    resend: bool,
    commands: AtomicU64,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("hash", &self.hash.get_hash())
            .field("resend", &self.resend)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// The script `source`; `resend` says whether a second run after a lost answer is harmless
    /// (the script is idempotent, or recognises its own earlier run).
    pub fn new(source: &'static str, resend: bool) -> Self {
        Self {
            source,
            hash: redis::Script::new(source),
            resend,
            commands: AtomicU64::new(0),
        }
    }

    /// Runs the script on `connection`: `EVALSHA`, then `EVAL` if the server answers
    /// `NOSCRIPT`.
    ///
    /// # Errors
    ///
    /// The connection's errors and the script's own.
    pub fn invoke<T: FromRedisValue>(
        &self,
        connection: &mut Connection,
        keys: &[impl ToRedisArgs],
        args: &impl ToRedisArgs,
    ) -> Result<T, RedisError> {
        let command = |name: &str, body: &str| {
            self.commands.fetch_add(1, Ordering::Relaxed);
            let mut command = redis::cmd(name);
            command.arg(body).arg(keys.len()).arg(keys).arg(args);
            command
        };
        match command("EVALSHA", self.hash.get_hash()).query(connection) {
            Err(error) if error.code() == Some("NOSCRIPT") => {
                command("EVAL", self.source).query(connection)
            }
            other => other,
        }
    }

    /// Commands sent for this script so far, each `NOSCRIPT` fallback and resend included.
    pub fn commands_sent(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }
}
