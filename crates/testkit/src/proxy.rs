//! A TCP proxy on loopback that a test can slow down, cut or close.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::Port;

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest chunk forwarded at once.
const CHUNK: usize = 16 * 1024;
/// Chunks read but not yet written, per direction. Reading stops while this many wait, so a
/// peer that does not read pushes back on the sender instead of filling the proxy's memory.
const CHUNKS_IN_FLIGHT: usize = 4;
/// How long the accepting thread waits for a connection before it checks for shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// A TCP proxy on a free `127.0.0.1` port in front of one server, for fault tests.
///
/// Point the code under test at [`addr`](Self::addr) instead of the server, then inject faults
/// while it runs:
///
/// - [`set_latency`](Self::set_latency) delays every chunk of bytes by the given time in each
///   direction, so a request-response round trip takes at least twice as long as set;
/// - [`stall_open_connections`](Self::stall_open_connections) delays the connections open at
///   the time only, as a partition or a peer that died silently does, while new connections
///   reach the server at once;
/// - [`cut_connections`](Self::cut_connections) closes every connection open at the time, and
///   clients see the connection end (EOF or reset);
/// - [`refuse_new`](Self::refuse_new) closes new connections as soon as they are accepted,
///   before anything reaches the server;
/// - [`heal`](Self::heal) removes the latency and lets new connections through again.
///
/// Each connection is served by its own threads. Each direction holds at most a few chunks of
/// 16 KiB in flight, so a peer that does not read stalls the sender as it would without the
/// proxy (beyond the kernel's socket buffers). The latency is real time: the proxy delays
/// real sockets for real clients, so it does not take a `Clock`. Dropping the proxy stops it
/// and closes every connection. Its port is reserved like a server's, so no server of this
/// process is handed it.
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
    /// Keeps the proxy's port from being handed to a server of this process.
    _port: Port,
}

struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    /// Non-blocking, and accepted from only while `state` is locked: a connection is either
    /// still in the listener's queue or registered in `connections`, never in between, so
    /// [`FaultProxy::cut_connections`] reaches every connection a client has open.
    listener: TcpListener,
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
    /// `None` while the proxy is still connecting to the target.
    upstream: Option<TcpStream>,
    /// Directions still being forwarded; the entry is removed when both are done.
    open_directions: u8,
    /// Delay on this connection alone, on top of none (the larger of it and the proxy's
    /// latency applies).
    stall: Duration,
}

impl Connection {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = &self.upstream {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
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

    /// How long a chunk read now on connection `id` waits before it is passed on.
    fn delay(&self, id: u64) -> Duration {
        let state = self.state();
        let stall = state
            .connections
            .get(&id)
            .map_or(Duration::ZERO, |connection| connection.stall);
        state.latency.max(stall)
    }

    /// Unregisters connection `id` and closes both of its sockets.
    fn close(&self, id: u64) {
        if let Some(connection) = self.state().connections.remove(&id) {
            connection.close();
        }
    }
}

impl FaultProxy {
    /// Starts a proxy on a free `127.0.0.1` port that forwards every connection to `target`.
    ///
    /// `target` is an address, not a server: while the server behind it is stopped, new
    /// connections reach whatever process holds that port by then, or are closed when none
    /// does.
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
        let (listener, port) = Port::bind_loopback()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
            listener,
        });
        let acceptor = std::thread::Builder::new()
            .name("infra-fault-proxy".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept(target, &shared)
            })?;
        Ok(Self {
            addr,
            target,
            shared,
            acceptor: Some(acceptor),
            _port: port,
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

    /// Delays every chunk on the connections being forwarded now by `stall` in each direction,
    /// from the moment it is read; connections accepted later are not delayed. This is what a
    /// client sees of a partition or of a peer that died without a reset: its connection goes
    /// silent, while a new one (to a healed route, or a restarted peer) answers.
    pub fn stall_open_connections(&self, stall: Duration) {
        for connection in self.shared.state().connections.values_mut() {
            connection.stall = stall;
        }
    }

    /// Closes every connection open now, both towards the client and towards the server.
    ///
    /// That includes connections whose handshake the kernel has completed but which the proxy
    /// has not accepted yet, and those it is still connecting to the target for: a client
    /// whose `connect` returned before this call sees its connection end.
    pub fn cut_connections(&self) {
        let mut state = self.shared.state();
        // The accepting thread accepts only under the lock, so this empties the queue.
        while let Ok((pending, _)) = self.shared.listener.accept() {
            let _ = pending.shutdown(Shutdown::Both);
        }
        for connection in std::mem::take(&mut state.connections).into_values() {
            connection.close();
        }
    }

    /// With `true`, closes each new connection as soon as it is accepted, without contacting
    /// the server; with `false`, forwards new connections again. Open connections are not
    /// affected.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.state().refuse_new = refuse;
    }

    /// Removes the latency and the stalls (from bytes read from now on) and accepts new
    /// connections again. Connections that were cut stay closed; clients reconnect.
    pub fn heal(&self) {
        let mut state = self.shared.state();
        state.latency = Duration::ZERO;
        state.refuse_new = false;
        for connection in state.connections.values_mut() {
            connection.stall = Duration::ZERO;
        }
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
        // The accepting thread sees this within `ACCEPT_POLL`.
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_connections();
    }
}

fn accept(target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        if !wait_readable(&shared.listener, ACCEPT_POLL) {
            continue;
        }
        let (client, id) = {
            let mut state = shared.state();
            let client = match shared.listener.accept() {
                Ok((client, _)) => client,
                // `cut_connections` emptied the queue first.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    drop(state);
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
            };
            if state.refuse_new {
                continue; // dropping `client` closes it
            }
            let Ok(registered) = client.try_clone() else {
                continue;
            };
            let id = state.next_id;
            state.next_id += 1;
            state.connections.insert(
                id,
                Connection {
                    client: registered,
                    upstream: None,
                    open_directions: 2,
                    stall: Duration::ZERO,
                },
            );
            (client, id)
        };
        match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(upstream) => {
                if forward(client, upstream, id, shared).is_err() {
                    shared.close(id);
                }
            }
            Err(_) => shared.close(id),
        }
    }
}

/// Waits up to `timeout` for a connection to accept; `true` if there may be one.
#[cfg(unix)]
#[allow(unsafe_code)]
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;

    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `poll` is one valid, initialised pollfd that outlives the call, and the count
    // passed is 1.
    unsafe { libc::poll(&raw mut poll, 1, millis) > 0 }
}

/// Waits a little; `true` so the caller tries a (non-blocking) accept.
#[cfg(not(unix))]
fn wait_readable(_listener: &TcpListener, timeout: Duration) -> bool {
    std::thread::sleep(timeout.min(Duration::from_millis(5)));
    true
}

/// Completes the registration of connection `id` and starts one pump per direction. If the
/// connection was cut while the target was being connected to, closes `upstream` instead.
fn forward(
    client: TcpStream,
    upstream: TcpStream,
    id: u64,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let registered = upstream.try_clone()?;
    let directions = [
        (client.try_clone()?, upstream.try_clone()?),
        (upstream, client),
    ];
    {
        let mut state = shared.state();
        let Some(connection) = state.connections.get_mut(&id) else {
            return Ok(()); // cut: dropping the sockets closes them
        };
        connection.upstream = Some(registered);
    }
    for (from, to) in directions {
        let pump_shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("infra-fault-proxy-pump".into())
            .spawn(move || {
                pump(from, to, id, &pump_shared);
                pump_shared.finish(id);
            })?;
    }
    Ok(())
}

/// Copies `from` to `to` for connection `id`, each chunk no earlier than its delay after it
/// was read. Reading and writing run on separate threads so that chunks in flight do not add
/// up their delays.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let (chunks, due_chunks) = mpsc::sync_channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
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
        let due = Instant::now() + shared.delay(id);
        let chunk = buffer.get(..read).unwrap_or_default().to_vec();
        if chunks.send((due, chunk)).is_err() {
            break;
        }
    }
    drop(chunks);
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_port_is_reserved_while_it_runs() {
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 9))).unwrap();
        assert!(
            crate::process::is_reserved(proxy.addr().port()),
            "a server of this process could be handed the proxy's port"
        );
    }
}
