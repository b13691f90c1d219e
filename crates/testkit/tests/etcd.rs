//! `EtcdServer` against the real `etcd`: start, persist, restart, pause, stop.
// The stranger on a freed port is test scaffolding on a std thread.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use infra_testkit::EtcdServer;

/// etcd's JSON gateway takes keys and values in base64; these are "greeting" and "hello".
const PUT_GREETING: &str = r#"{"key":"Z3JlZXRpbmc=","value":"aGVsbG8="}"#;
const RANGE_GREETING: &str = r#"{"key":"Z3JlZXRpbmc="}"#;

#[test]
fn starts_on_loopback_and_stores_keys() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    assert!(etcd.addr().ip().is_loopback());
    assert_eq!(etcd.url(), format!("http://{}", etcd.addr()));
    let (status, _) = etcd.http("POST", "/v3/kv/put", PUT_GREETING).unwrap();
    assert_eq!(status, 200);
    let (status, body) = etcd.http("POST", "/v3/kv/range", RANGE_GREETING).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("aGVsbG8="), "value missing from {body}");
}

#[test]
fn restart_after_a_kill_keeps_port_and_acknowledged_writes() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let addr = etcd.addr();
    assert_eq!(
        etcd.http("POST", "/v3/kv/put", PUT_GREETING).unwrap().0,
        200
    );
    etcd.kill();
    assert!(!etcd.is_running());
    assert_eq!(etcd.pid(), None);
    etcd.restart().unwrap();
    assert_eq!(etcd.addr(), addr);
    let (_, body) = etcd.http("POST", "/v3/kv/range", RANGE_GREETING).unwrap();
    assert!(
        body.contains("aGVsbG8="),
        "write lost across the crash: {body}"
    );
}

#[cfg(unix)]
#[test]
fn pause_stops_answers_and_resume_brings_them_back() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    etcd.pause();
    assert!(etcd.is_running());
    assert!(
        etcd.http("GET", "/health", "").is_err(),
        "a paused member must not answer"
    );
    etcd.resume();
    assert_eq!(etcd.http("GET", "/health", "").unwrap().0, 200);
}

#[cfg(target_os = "linux")]
#[test]
fn drop_stops_the_member_and_removes_its_data() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    etcd.stop();
    assert!(!etcd.is_running());
    etcd.restart().unwrap();
    let pid = etcd.pid().unwrap();
    let data_dir = etcd.data_dir().to_path_buf();
    drop(etcd);
    // Checked by process rather than port: a freed port may be taken by another test binary.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "member {pid} outlived its handle"
    );
    assert!(!data_dir.exists(), "{} was not removed", data_dir.display());
}

#[test]
fn http_never_talks_to_a_stranger_on_a_stopped_members_port() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    etcd.kill();
    // Another process takes the freed client port and answers every request.
    let stranger = TcpListener::bind(etcd.addr()).unwrap();
    std::thread::spawn(move || {
        for stream in stranger.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        }
    });
    let error = etcd
        .http("POST", "/v3/kv/range", RANGE_GREETING)
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected, "{error}");
}
