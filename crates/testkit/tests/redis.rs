//! `RedisServer` against the real `redis-server`: start, persist, restart, pause, stop.
// The waits for a process to exit use std's thread::sleep.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use infra_testkit::RedisServer;

/// Whether the Redis answering at `addr` is process `pid`. A freed port can be taken by another
/// test binary's server at once, so "nothing answers" is not something a test can assert.
fn answers_as(addr: SocketAddr, pid: u32) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(read @ 1..) = stream.read(&mut chunk) {
        reply.extend_from_slice(&chunk[..read]);
        if let Some(answering) = String::from_utf8_lossy(&reply)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|id| id.trim().parse::<u32>().ok())
        {
            return answering == pid;
        }
    }
    false
}

#[test]
fn starts_on_loopback_and_answers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    assert!(redis.addr().ip().is_loopback());
    assert_eq!(redis.url(), format!("redis://{}", redis.addr()));
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
    assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), "+OK");
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), "$1");
}

#[test]
fn two_servers_are_independent() {
    let Some(a) = RedisServer::start() else {
        return;
    };
    let Some(b) = RedisServer::start() else {
        return;
    };
    assert_ne!(a.addr(), b.addr());
    a.command(&["SET", "only-in-a", "1"]).unwrap();
    assert_eq!(b.command(&["EXISTS", "only-in-a"]).unwrap(), ":0");
}

#[test]
fn restart_keeps_port_and_acknowledged_writes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let addr = redis.addr();
    let pid = redis.pid().unwrap();
    assert!(answers_as(addr, pid));
    redis.command(&["SET", "durable", "yes"]).unwrap();
    redis.stop();
    assert!(!redis.is_running());
    assert!(!answers_as(addr, pid), "a stopped server must not answer");
    redis.restart().unwrap();
    assert_eq!(redis.addr(), addr);
    assert_eq!(redis.command(&["EXISTS", "durable"]).unwrap(), ":1");
}

#[test]
fn a_killed_server_loses_no_acknowledged_write() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    for i in 0..50 {
        assert_eq!(
            redis.command(&["INCR", "counter"]).unwrap(),
            format!(":{}", i + 1)
        );
    }
    redis.kill();
    redis.restart().unwrap();
    assert_eq!(redis.command(&["INCR", "counter"]).unwrap(), ":51");
}

#[test]
fn restart_refuses_a_port_taken_while_the_server_was_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.stop();
    let stranger = TcpListener::bind(redis.addr()).unwrap();
    let error = redis.restart().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("was taken while the server was down"),
        "{error}"
    );
    assert!(!redis.is_running());
    drop(stranger);
    redis.restart().unwrap();
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
}

#[test]
fn a_server_that_exited_is_not_signalled_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    assert!(redis.pid().is_some());
    redis.command(&["SHUTDOWN", "NOSAVE"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Waiting for the process to exit; `is_running` reaps it.
    while redis.is_running() {
        assert!(std::time::Instant::now() < deadline, "SHUTDOWN was ignored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(redis.pid(), None, "a reaped server has no pid to signal");
    #[cfg(unix)]
    {
        redis.pause();
        redis.resume();
    }
    redis.stop();
    redis.restart().unwrap();
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
}

#[cfg(unix)]
#[test]
fn pause_stops_answers_and_resume_brings_them_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.pause();
    assert!(redis.is_running(), "a paused server is still alive");
    let error = redis.command(&["PING"]).unwrap_err();
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "expected a timeout, got {error:?}"
    );
    redis.resume();
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
}

#[cfg(target_os = "linux")]
#[test]
fn drop_stops_the_process_and_removes_its_data() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let addr = redis.addr();
    let pid = redis.pid().unwrap();
    let data_dir = redis.data_dir().to_path_buf();
    assert!(data_dir.exists());
    redis.pause();
    drop(redis);
    assert!(!answers_as(addr, pid), "{addr} is still answered by {pid}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the drop"
    );
    assert!(!data_dir.exists(), "{} was not removed", data_dir.display());
}

#[test]
fn drop_during_a_panic_still_stops_the_server() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        seen = Some((redis.addr(), redis.pid().unwrap()));
        panic!("test failed while the server ran");
    }));
    if let Some((addr, pid)) = seen {
        assert!(result.is_err());
        assert!(!answers_as(addr, pid), "server outlived the panic");
    }
}

/// Binds `addr` and answers every read on every connection with `reply`, as some other
/// server that took a freed port would.
fn stranger_on(addr: SocketAddr, reply: &'static [u8]) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0; 4096];
                while let Ok(1..) = stream.read(&mut buffer) {
                    if stream.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

#[test]
fn command_never_talks_to_a_stranger_on_a_stopped_servers_port() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    stranger_on(redis.addr(), b"+STRANGER\r\n");
    let error = redis.command(&["PING"]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected, "{error}");
}
