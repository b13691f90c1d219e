//! A stand-in OTLP/HTTP receiver on a loopback port: it records every request and answers
//! from a script.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use infra_common::sync::{Arc, Mutex, thread};
use infra_testkit::LoopbackListener;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the receiver does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answers with this status and extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Answers `200` with this content type and body.
    Body(&'static str, Vec<u8>),
    /// Reads the request and never answers.
    Silence,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Vec<Request>,
    script: Vec<Reply>,
}

/// The receiver; it runs until the test process ends.
#[derive(Clone, Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    /// A receiver answering `script` in order, then 200 to everything after it.
    pub fn start(script: Vec<Reply>) -> Self {
        let listener = LoopbackListener::bind().expect("a loopback port");
        let addr = listener.addr();
        let shared = Arc::new(Mutex::new(Shared {
            requests: Vec::new(),
            script,
        }));
        let accepting = Arc::clone(&shared);
        // Detached: the receiver lives as long as the test process.
        drop(thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accepting);
                drop(thread::spawn(move || serve(stream, &shared)));
            }
        }));
        Self { addr, shared }
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) {
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    // One connection may carry several requests (keep-alive).
    while let Some(request) = read_request(&mut reader) {
        let reply = {
            let mut shared = shared.lock();
            shared.requests.push(request);
            if shared.script.is_empty() {
                Reply::Status(200, Vec::new())
            } else {
                shared.script.remove(0)
            }
        };
        match reply {
            Reply::Status(status, headers) => {
                let mut response = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n");
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                if writer.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Body(content_type, body) => {
                let head = format!(
                    "HTTP/1.1 200 Scripted\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Silence => {
                // Hold the connection open without a word until the client gives up.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                return;
            }
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
