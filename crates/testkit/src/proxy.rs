//! A TCP proxy on loopback that a test can slow down, cut or close.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest chunk forwarded at once.
const CHUNK: usize = 16 * 1024;

/// A TCP proxy on a free `127.0.0.1` port in front of one server, for fault tests.
///
/// Point the code under test at [`addr`](Self::addr) instead of the server, then inject faults
/// while it runs:
///
/// - [`set_latency`](Self::set_latency) delays every chunk of bytes by the given time in each
///   direction, so a request-response round trip takes at least twice as long as set;
/// - [`cut_connections`](Self::cut_connections) closes every connection open at the time, and
///   clients see the connection end (EOF or reset);
/// - [`refuse_new`](Self::refuse_new) closes new connections as soon as they are accepted,
///   before anything reaches the server;
/// - [`heal`](Self::heal) removes the latency and lets new connections through again.
///
/// Each connection is served by its own threads. The latency is real time: the proxy delays
/// real sockets for real clients, so it does not take a `Clock`. Dropping the proxy stops it
/// and closes every connection.
///
/// ```no_run
/// use std::time::Duration;
/// use infra_testkit::{FaultProxy, RedisServer};
///
/// let Some(redis) = RedisServer::start() else { return };
/// let proxy = FaultProxy::start(redis.addr()).unwrap();
/// let url = format!("redis://{}", proxy.addr()); // the code under test connects here
/// proxy.set_latency(Duration::from_millis(200));
/// proxy.cut_connections();
/// proxy.heal();
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    latency: Duration,
    refuse_new: bool,
    next_id: u64,
    connections: HashMap<u64, Connection>,
}

/// Handles to both sockets of one proxied connection, kept to cut it.
struct Connection {
    client: TcpStream,
    upstream: TcpStream,
    /// Directions still being forwarded; the entry is removed when both are done.
    open_directions: u8,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, id: u64) {
        let mut state = self.state();
        if let Some(connection) = state.connections.get_mut(&id) {
            connection.open_directions = connection.open_directions.saturating_sub(1);
            if connection.open_directions == 0 {
                state.connections.remove(&id);
            }
        }
    }
}

impl FaultProxy {
    /// Starts a proxy on a free `127.0.0.1` port that forwards every connection to `target`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `target` is not a loopback address (tests never leave the machine),
    /// or the error of binding the port or starting the accepting thread.
    pub fn start(target: SocketAddr) -> io::Result<Self> {
        if !target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy forwards only to loopback, not {target}"),
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        });
        let acceptor = std::thread::Builder::new()
            .name("infra-fault-proxy".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept(&listener, target, &shared)
            })?;
        Ok(Self {
            addr,
            target,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the proxy.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Delays every chunk by `latency` in each direction, from the moment it is read. Applies
    /// to bytes read from now on, on open and new connections alike.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state().latency = latency;
    }

    /// Closes every connection open now, both towards the client and towards the server.
    pub fn cut_connections(&self) {
        let connections = std::mem::take(&mut self.shared.state().connections);
        for connection in connections.values() {
            let _ = connection.client.shutdown(Shutdown::Both);
            let _ = connection.upstream.shutdown(Shutdown::Both);
        }
    }

    /// With `true`, closes each new connection as soon as it is accepted, without contacting
    /// the server; with `false`, forwards new connections again. Open connections are not
    /// affected.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.state().refuse_new = refuse;
    }

    /// Removes the latency and accepts new connections again. Connections that were cut stay
    /// closed; clients reconnect.
    pub fn heal(&self) {
        let mut state = self.shared.state();
        state.latency = Duration::ZERO;
        state.refuse_new = false;
    }

    /// The number of connections being forwarded now.
    pub fn connections(&self) -> usize {
        self.shared.state().connections.len()
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("latency", &state.latency)
            .field("refuse_new", &state.refuse_new)
            .field("connections", &state.connections.len())
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_connections();
    }
}

fn accept(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        if shared.state().refuse_new {
            continue; // dropping `client` closes it
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            continue;
        };
        let _ = forward(client, upstream, shared);
    }
}

/// Registers the connection and starts one pump per direction.
fn forward(client: TcpStream, upstream: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let id = {
        let mut state = shared.state();
        let id = state.next_id;
        state.next_id += 1;
        state.connections.insert(
            id,
            Connection {
                client: client.try_clone()?,
                upstream: upstream.try_clone()?,
                open_directions: 2,
            },
        );
        id
    };
    let directions = [
        (client.try_clone()?, upstream.try_clone()?),
        (upstream, client),
    ];
    for (from, to) in directions {
        let pump_shared = Arc::clone(shared);
        let started = std::thread::Builder::new()
            .name("infra-fault-proxy-pump".into())
            .spawn(move || {
                pump(from, to, &pump_shared);
                pump_shared.finish(id);
            });
        if let Err(error) = started {
            shared.finish(id);
            return Err(error);
        }
    }
    Ok(())
}

/// Copies `from` to `to`, each chunk no earlier than the latency after it was read. Reading
/// and writing run on separate threads so that chunks in flight do not add up their delays.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let (chunks, due_chunks) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::Builder::new()
        .name("infra-fault-proxy-writer".into())
        .spawn(move || {
            for (due, bytes) in due_chunks {
                let wait = due.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if to.write_all(&bytes).is_err() {
                    return;
                }
            }
            // The reading side ended: pass the end of stream on.
            let _ = to.shutdown(Shutdown::Write);
        });
    let Ok(writer) = writer else {
        return;
    };
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let due = Instant::now() + shared.state().latency;
        let chunk = buffer.get(..read).unwrap_or_default().to_vec();
        if chunks.send((due, chunk)).is_err() {
            break;
        }
    }
    drop(chunks);
    let _ = writer.join();
}
