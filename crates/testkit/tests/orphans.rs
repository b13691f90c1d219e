//! A test binary killed outright (SIGKILL, a CI timeout) takes its servers along, and the next
//! run removes the data it left behind.
#![cfg(target_os = "linux")]
// The test drives child processes and reads their output with std's process API directly.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra_testkit::RedisServer;

const HELPER: &str = "holds_a_server_until_killed";
/// Precedes the helper's report; the harness prints the test's name on the same line.
const REPORT: &str = "orphan report: ";

/// Run in a child process by the test below: starts a server, reports it, and waits to be
/// killed (its standard input never closes while the parent holds it).
#[test]
#[ignore = "a helper: `a_killed_test_binary_takes_its_servers_along` runs it in a child process"]
fn holds_a_server_until_killed() {
    let redis = RedisServer::start().expect("the parent checked that redis-server exists");
    println!(
        "{REPORT}{} {} {}",
        redis.pid().unwrap(),
        redis.addr(),
        redis.data_dir().display()
    );
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Whether process `pid` is gone or a zombie that will never run again.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name: `pid (name) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn a_killed_test_binary_takes_its_servers_along() {
    // Skips (or fails under INFRA_REQUIRE_SERVERS=1) exactly like any Redis test.
    let Some(_probe) = RedisServer::start() else {
        return;
    };
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            HELPER,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(helper.stdout.take().unwrap());
    let report = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once(REPORT).map(|(_, report)| report.to_owned()))
        .expect("the helper reported no server");
    let mut fields = report.split(' ');
    let pid: u32 = fields.next().unwrap().parse().unwrap();
    let addr: SocketAddr = fields.next().unwrap().parse().unwrap();
    let data_dir = PathBuf::from(fields.next().unwrap());
    assert!(TcpStream::connect(addr).is_ok(), "the helper's server runs");

    helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.wait().unwrap();

    // Waiting for the kernel to deliver the parent-death signal, not for time to pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "server {pid} outlived its killed test binary"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The port is not checked: once free, another test binary's server may take it at once.
    assert!(data_dir.exists(), "nothing could clean up after SIGKILL");

    // The next server start sweeps the directories of dead owners.
    let Some(_next) = RedisServer::start() else {
        return;
    };
    assert!(
        !data_dir.exists(),
        "{} of a dead test binary was not swept",
        data_dir.display()
    );
}
