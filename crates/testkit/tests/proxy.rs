//! `FaultProxy` in front of a loopback echo server (and a real `redis-server`): bytes pass
//! unchanged, latency is added, connections are cut and refused, and `heal` undoes it.
// The echo server is test scaffolding on std threads.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use infra_testkit::{FaultProxy, LoopbackListener, RedisServer};

/// Generous: a loaded machine may be slow, and a timeout only turns a hang into a failure.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback server that echoes every byte back, on its own thread.
fn echo_server() -> SocketAddr {
    let listener = LoopbackListener::bind().unwrap();
    let addr = listener.addr();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0; 1024];
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Sends `message` and reads as many bytes back.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut reply = vec![0; message.len()];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// Whether the peer has closed the connection: EOF or an error, not a timeout.
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn bytes_pass_through_unchanged_in_both_directions() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    assert!(proxy.addr().ip().is_loopback());
    let mut stream = connect(proxy.addr());
    let message: Vec<u8> = (0..=255).cycle().take(100_000).collect();
    assert_eq!(round_trip(&mut stream, &message).unwrap(), message);
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn added_latency_is_a_lower_bound_on_the_round_trip() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut stream = connect(proxy.addr());
    round_trip(&mut stream, b"warm").unwrap();
    let latency = Duration::from_millis(150);
    proxy.set_latency(latency);
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").unwrap(), b"slow");
    let elapsed = started.elapsed();
    // Delayed once on the way there and once on the way back.
    assert!(elapsed >= 2 * latency, "round trip took only {elapsed:?}");
    proxy.heal();
    assert_eq!(round_trip(&mut stream, b"fast").unwrap(), b"fast");
}

#[test]
fn a_stall_silences_the_open_connections_only() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut stalled = connect(proxy.addr());
    round_trip(&mut stalled, b"warm").unwrap();
    proxy.stall_open_connections(Duration::from_secs(60));
    let mut fresh = connect(proxy.addr());
    assert_eq!(round_trip(&mut fresh, b"new").unwrap(), b"new");
    stalled
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let silent = round_trip(&mut stalled, b"held");
    assert!(
        silent.as_ref().is_err_and(|error| matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )),
        "the stalled connection answered: {silent:?}"
    );
}

#[test]
fn a_cut_connection_ends_for_the_client_and_new_ones_work() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut stream = connect(proxy.addr());
    round_trip(&mut stream, b"before").unwrap();
    proxy.cut_connections();
    assert!(is_closed(&mut stream), "the client did not see the cut");
    assert_eq!(proxy.connections(), 0);
    let mut again = connect(proxy.addr());
    assert_eq!(round_trip(&mut again, b"after").unwrap(), b"after");
}

#[test]
fn refused_connections_close_until_healed() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut open = connect(proxy.addr());
    round_trip(&mut open, b"open").unwrap();
    proxy.refuse_new(true);
    let mut refused = connect(proxy.addr());
    assert!(is_closed(&mut refused), "a refused connection stayed open");
    assert_eq!(
        round_trip(&mut open, b"still").unwrap(),
        b"still",
        "refusing new connections leaves open ones alone"
    );
    proxy.heal();
    let mut healed = connect(proxy.addr());
    assert_eq!(round_trip(&mut healed, b"healed").unwrap(), b"healed");
}

#[test]
fn only_loopback_targets_are_accepted() {
    let error = FaultProxy::start(SocketAddr::from(([192, 0, 2, 1], 6379))).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn dropping_the_proxy_closes_its_connections() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut stream = connect(proxy.addr());
    round_trip(&mut stream, b"x").unwrap();
    drop(proxy);
    assert!(is_closed(&mut stream));
}

/// Sends an inline PING and reads the whole `+PONG` line.
fn ping(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    stream.write_all(b"PING\r\n")?;
    let mut reply = vec![0; b"+PONG\r\n".len()];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

#[test]
fn a_redis_client_through_the_proxy_sees_each_fault() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(redis.addr()).unwrap();
    assert_eq!(proxy.target(), redis.addr());
    let mut client = connect(proxy.addr());
    assert_eq!(ping(&mut client).unwrap(), b"+PONG\r\n");
    let latency = Duration::from_millis(100);
    proxy.set_latency(latency);
    let started = Instant::now();
    assert_eq!(ping(&mut client).unwrap(), b"+PONG\r\n");
    assert!(started.elapsed() >= 2 * latency);
    proxy.cut_connections();
    assert!(is_closed(&mut client));
    proxy.heal();
    let mut client = connect(proxy.addr());
    assert_eq!(ping(&mut client).unwrap(), b"+PONG\r\n");
}

#[test]
fn a_cut_ends_every_connection_open_at_the_time_also_those_not_yet_accepted() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    // The kernel completes these handshakes before the proxy has accepted (let alone
    // forwarded) most of them; the cut must end them all the same.
    let mut clients: Vec<TcpStream> = (0..200).map(|_| connect(proxy.addr())).collect();
    proxy.cut_connections();
    for (index, client) in clients.iter_mut().enumerate() {
        assert!(is_closed(client), "client {index} survived the cut");
    }
    let mut again = connect(proxy.addr());
    assert_eq!(round_trip(&mut again, b"after").unwrap(), b"after");
}

/// A loopback server that accepts connections and never reads from them.
fn deaf_server() -> SocketAddr {
    let listener = LoopbackListener::bind().unwrap();
    let addr = listener.addr();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    addr
}

#[test]
fn a_server_that_does_not_read_pushes_back_on_the_client() {
    // Several times what the kernel's socket buffers on both sides of the proxy hold (about
    // 8 MiB on Linux), far less than an unbounded proxy takes in.
    const LIMIT: usize = 64 << 20;
    let proxy = FaultProxy::start(deaf_server()).unwrap();
    let mut client = connect(proxy.addr());
    // A write that makes no progress for this long means the proxy stopped taking bytes.
    client
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = vec![7; 1 << 20];
    let mut written = 0;
    while written < LIMIT {
        match client.write(&chunk) {
            Ok(0) => panic!("the proxy closed the connection"),
            Ok(count) => written += count,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(error) => panic!("write failed: {error}"),
        }
    }
    assert!(
        written < LIMIT,
        "the proxy buffered {written} bytes for a server that reads none"
    );
}
