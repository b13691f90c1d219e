//! Drives the `w3c_server` example through the W3C trace-context test-harness protocol, on
//! loopback only, the way the official suite does: a harness-side listener for callbacks, raw
//! `POST /test` requests (repeated headers, odd casing and stray bytes written exactly as
//! given), and checks of what each callback received.
//!
//! Every row of [`table`] is one case taken from W3C Trace Context Level 2, section "Trace
//! Context HTTP Request Headers Format" (`traceparent` fields and versioning, `tracestate`
//! list, key and value grammar, limits and combining of repeated fields).

#[path = "../w3c_server/service.rs"]
mod service;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Collected, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The caller's ids in every valid `traceparent` below (the spec's own example ids).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
/// A second, different trace id for the duplicated-header cases.
const OTHER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// How long one `POST /test` round trip (with its callbacks) may take before the case fails.
const ROUND_TRIP: Duration = Duration::from_secs(5);

/// `00-{TRACE}-{PARENT}-{flags}`.
fn tp(flags: &str) -> String {
    format!("00-{TRACE}-{PARENT}-{flags}")
}

/// What the callbacks of one case must show.
#[derive(Debug)]
enum Outcome {
    /// The caller's trace continues: the same trace id, a parent id that is neither the
    /// caller's nor another callback's, these flags, and this `tracestate` (`None`: no
    /// `tracestate` header at all).
    Continues {
        flags: u8,
        tracestate: Option<String>,
    },
    /// The trace restarts: a trace id that appears nowhere in the request, the sampled and
    /// random flags of a fresh trace (this server samples every new trace), no `tracestate`.
    Restarts,
}

/// One row: the request headers as written on the wire, how many callbacks the harness asks
/// for, and what each callback must receive.
#[derive(Debug)]
struct Case {
    name: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    calls: usize,
    outcome: Outcome,
}

fn row(name: &'static str, headers: &[(&str, &[u8])], outcome: Outcome) -> Case {
    Case {
        name,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
        calls: 1,
        outcome,
    }
}

/// A row whose request carries one `traceparent` field and nothing else.
fn tp_row(name: &'static str, traceparent: &str, outcome: Outcome) -> Case {
    row(name, &[("traceparent", traceparent.as_bytes())], outcome)
}

/// A row whose request carries a valid, unsampled `traceparent` and these `tracestate` fields.
fn state_row(name: &'static str, tracestate: &[&[u8]], outcome: Outcome) -> Case {
    let mut headers = vec![("traceparent".to_owned(), tp("00").into_bytes())];
    headers.extend(
        tracestate
            .iter()
            .map(|value| ("tracestate".to_owned(), value.to_vec())),
    );
    Case {
        name,
        headers,
        calls: 1,
        outcome,
    }
}

fn continues(flags: u8) -> Outcome {
    Outcome::Continues {
        flags,
        tracestate: None,
    }
}

/// Continues with flags `00` (the caller did not sample) and the given `tracestate`.
fn keeps_state(tracestate: &str) -> Outcome {
    Outcome::Continues {
        flags: 0x00,
        tracestate: Some(tracestate.to_owned()),
    }
}

/// Continues with flags `00` and no `tracestate`: the header was invalid and dropped whole.
fn drops_state() -> Outcome {
    continues(0x00)
}

/// The members `bar{i}={i}` for `i` in `from..=to`, two digits each: `bar01=01,bar02=02`.
fn members(from: usize, to: usize) -> String {
    (from..=to)
        .map(|i| format!("bar{i:02}={i:02}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[allow(clippy::too_many_lines)] // one row per case reads best as one table
fn table() -> Vec<Case> {
    use Outcome::Restarts;

    let v01 = tp("01");
    let v00 = tp("00");
    let v01 = v01.as_bytes();
    let v00 = v00.as_bytes();
    let other = format!("00-{OTHER_TRACE}-{PARENT}-01");
    let cc = format!("cc-{TRACE}-{PARENT}-01");
    let cc_more = format!("{cc}-what-comes-next");
    let cc_dot = format!("{cc}.what-comes-next");
    let cc_flags = format!("cc-{TRACE}-{PARENT}-09-what-comes-next");
    let v00_dot = format!("{}.", tp("01"));
    let v00_more = format!("{}-what-comes-next", tp("01"));
    let v00_dash = format!("{}-", tp("01"));
    let ows = format!("\t {} \t", tp("01"));

    // tracestate: every legal key and value character (`@` is a key character in Level 2).
    let all_key_chars = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@";
    let all_value_chars: String = (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect();
    let all_chars = format!("{all_key_chars}={all_value_chars}");
    let key_256 = format!("{}=1", "k".repeat(256));
    let key_257 = format!("{}=1", "k".repeat(257));
    let tenant_242 = format!("{}@v=1", "t".repeat(242));
    let system_15 = format!("t@{}=1", "v".repeat(15));
    let value_256 = format!("foo={}", "v".repeat(256));
    let value_257 = format!("foo={}", "v".repeat(257));
    // Over 512 characters: the entry longer than 128 goes first, then entries from the end.
    let fifty = "y".repeat(50);
    let shorts: Vec<String> = (0..12).map(|i| format!("s{i:02}={fifty}")).collect();
    let long_entry = format!("big={}", "x".repeat(200));
    let with_long = format!(
        "{},{long_entry},{}",
        shorts[..4].join(","),
        shorts[4..8].join(",")
    );
    let twelve = shorts.join(",");

    let m1 = members(1, 10);
    let m2 = members(11, 20);
    let m3 = members(21, 30);
    let m4_32 = members(31, 32);
    let m4_33 = members(31, 33);

    let tp_name = |name: &'static str| [(name, v01)];

    let mut table = vec![
        // --- traceparent: present, absent, header names -----------------------------------
        row("no trace headers", &[], Restarts),
        row("valid, sampled", &tp_name("traceparent"), continues(0x01)),
        row(
            "valid, not sampled",
            &[("traceparent", v00)],
            continues(0x00),
        ),
        row("name TraceParent", &tp_name("TraceParent"), continues(0x01)),
        row("name TRACEPARENT", &tp_name("TRACEPARENT"), continues(0x01)),
        row("name TrAcEpArEnT", &tp_name("TrAcEpArEnT"), continues(0x01)),
        row("name trace-parent", &tp_name("trace-parent"), Restarts),
        row("name trace.parent", &tp_name("trace.parent"), Restarts),
        row(
            "duplicated, different ids",
            &[("traceparent", v01), ("traceparent", other.as_bytes())],
            Restarts,
        ),
        row(
            "duplicated, identical",
            &[("traceparent", v01), ("TraceParent", v01)],
            Restarts,
        ),
        row(
            "duplicated, second not text",
            &[("traceparent", v01), ("traceparent", b"\xff\xfe")],
            Restarts,
        ),
        tp_row("OWS around the value", &ows, continues(0x01)),
        // --- version -----------------------------------------------------------------------
        tp_row("version ff", &format!("ff-{TRACE}-{PARENT}-01"), Restarts),
        tp_row("version .0", &format!(".0-{TRACE}-{PARENT}-01"), Restarts),
        tp_row("version 0.", &format!("0.-{TRACE}-{PARENT}-01"), Restarts),
        tp_row(
            "version of 3 digits",
            &format!("000-{TRACE}-{PARENT}-01"),
            Restarts,
        ),
        tp_row(
            "version of 1 digit",
            &format!("0-{TRACE}-{PARENT}-01"),
            Restarts,
        ),
        tp_row(
            "version uppercase CC",
            &format!("CC-{TRACE}-{PARENT}-01"),
            Restarts,
        ),
        tp_row("version 00 then .", &v00_dot, Restarts),
        tp_row("version 00 then -more", &v00_more, Restarts),
        tp_row("version 00 then -", &v00_dash, Restarts),
        tp_row("version cc, 55 chars", &cc, continues(0x01)),
        tp_row("version cc then -more", &cc_more, continues(0x01)),
        tp_row("version cc then .more", &cc_dot, Restarts),
        tp_row("version cc, unknown flag bits", &cc_flags, continues(0x01)),
        // --- trace-id ----------------------------------------------------------------------
        tp_row(
            "trace-id all zero",
            &format!("00-{}-{PARENT}-01", "0".repeat(32)),
            Restarts,
        ),
        tp_row(
            "trace-id leading .",
            &format!("00-.{}-{PARENT}-01", &TRACE[1..]),
            Restarts,
        ),
        tp_row(
            "trace-id trailing .",
            &format!("00-{}.-{PARENT}-01", &TRACE[..31]),
            Restarts,
        ),
        tp_row(
            "trace-id uppercase",
            &format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            Restarts,
        ),
        tp_row(
            "trace-id of 33 digits",
            &format!("00-{TRACE}5-{PARENT}-01"),
            Restarts,
        ),
        tp_row(
            "trace-id of 31 digits",
            &format!("00-{}-{PARENT}-01", &TRACE[..31]),
            Restarts,
        ),
        tp_row(
            "trace-id not ASCII",
            &format!("00-{}\u{e9}-{PARENT}-01", &TRACE[..30]),
            Restarts,
        ),
        // --- parent-id ---------------------------------------------------------------------
        tp_row(
            "parent-id all zero",
            &format!("00-{TRACE}-{}-01", "0".repeat(16)),
            Restarts,
        ),
        tp_row(
            "parent-id leading .",
            &format!("00-{TRACE}-.{}-01", &PARENT[1..]),
            Restarts,
        ),
        tp_row(
            "parent-id trailing .",
            &format!("00-{TRACE}-{}.-01", &PARENT[..15]),
            Restarts,
        ),
        tp_row(
            "parent-id uppercase",
            &format!("00-{TRACE}-00F067AA0BA902B7-01"),
            Restarts,
        ),
        tp_row(
            "parent-id of 17 digits",
            &format!("00-{TRACE}-{PARENT}7-01"),
            Restarts,
        ),
        tp_row(
            "parent-id of 15 digits",
            &format!("00-{TRACE}-{}-01", &PARENT[..15]),
            Restarts,
        ),
        // --- trace-flags -------------------------------------------------------------------
        tp_row("flags .0", &tp(".0"), Restarts),
        tp_row("flags 0.", &tp("0."), Restarts),
        tp_row("flags of 3 digits", &tp("001"), Restarts),
        tp_row(
            "flags of 1 digit",
            &format!("00-{TRACE}-{PARENT}-1"),
            Restarts,
        ),
        tp_row("flags uppercase 0A", &tp("0A"), Restarts),
        tp_row("random flag kept", &tp("02"), continues(0x02)),
        tp_row("random and sampled kept", &tp("03"), continues(0x03)),
        tp_row("unknown bits dropped (ff)", &tp("ff"), continues(0x03)),
        tp_row("unknown bits dropped (fd)", &tp("fd"), continues(0x01)),
        tp_row("unknown bits dropped (04)", &tp("04"), continues(0x00)),
        // --- tracestate: reading and combining ---------------------------------------------
        row(
            "tracestate without traceparent",
            &[("tracestate", b"foo=1,bar=2")],
            Restarts,
        ),
        row(
            "tracestate with invalid traceparent",
            &[
                ("traceparent", tp("0.").as_bytes()),
                ("tracestate", b"foo=1"),
            ],
            Restarts,
        ),
        state_row(
            "tracestate kept",
            &[b"foo=1,bar=2"],
            keeps_state("foo=1,bar=2"),
        ),
        row(
            "name TraceState",
            &[("traceparent", v00), ("TraceState", b"foo=1")],
            keeps_state("foo=1"),
        ),
        row(
            "name TRACESTATE",
            &[("traceparent", v00), ("TRACESTATE", b"foo=1")],
            keeps_state("foo=1"),
        ),
        row(
            "name trace-state",
            &[("traceparent", v00), ("trace-state", b"foo=1")],
            drops_state(),
        ),
        row(
            "name trace.state",
            &[("traceparent", v00), ("trace.state", b"foo=1")],
            drops_state(),
        ),
        state_row("empty tracestate", &[b""], drops_state()),
        state_row(
            "member then empty field",
            &[b"foo=1", b""],
            keeps_state("foo=1"),
        ),
        state_row(
            "empty field then member",
            &[b"", b"foo=1"],
            keeps_state("foo=1"),
        ),
        state_row(
            "three fields combined in order",
            &[b"foo=1,bar=2", b"rojo=1,congo=2", b"baz=3"],
            keeps_state("foo=1,bar=2,rojo=1,congo=2,baz=3"),
        ),
        state_row(
            "empty members",
            &[b",foo=1,, \t ,bar=2,"],
            keeps_state("foo=1,bar=2"),
        ),
        state_row(
            "OWS around members",
            &[b"foo=1 \t , \t bar=2,\t \tbaz=3"],
            keeps_state("foo=1,bar=2,baz=3"),
        ),
        state_row(
            "OWS around the field",
            &[b"\t foo=1 \t"],
            keeps_state("foo=1"),
        ),
        // A repeated key keeps the list: the first entry stays, later duplicates go.
        state_row(
            "duplicate key, one field",
            &[b"foo=1,foo=2"],
            keeps_state("foo=1"),
        ),
        state_row(
            "duplicate key, identical entries",
            &[b"foo=1,foo=1"],
            keeps_state("foo=1"),
        ),
        state_row(
            "duplicate key, two fields",
            &[b"foo=1", b"foo=1"],
            keeps_state("foo=1"),
        ),
        state_row(
            "32 members over 4 fields",
            &[
                m1.as_bytes(),
                m2.as_bytes(),
                m3.as_bytes(),
                m4_32.as_bytes(),
            ],
            keeps_state(&members(1, 32)),
        ),
        state_row(
            "33 members over 4 fields",
            &[
                m1.as_bytes(),
                m2.as_bytes(),
                m3.as_bytes(),
                m4_33.as_bytes(),
            ],
            drops_state(),
        ),
        state_row(
            "bad field poisons the others",
            &[b"foo=1", "bar=\u{e9}".as_bytes()],
            drops_state(),
        ),
        state_row(
            "field not text poisons the others",
            &[b"foo=1", b"bar=\xff"],
            drops_state(),
        ),
        // --- tracestate keys: Level 2 grammar `(lcalpha / DIGIT) 0*255(keychar)` -----------
        state_row(
            "every key and value character",
            &[all_chars.as_bytes()],
            keeps_state(&all_chars),
        ),
        state_row(
            "key starting with a digit",
            &[b"1foo=1"],
            keeps_state("1foo=1"),
        ),
        state_row(
            "key 256 characters",
            &[b"foo=1", key_256.as_bytes()],
            keeps_state(&format!("foo=1,{key_256}")),
        ),
        state_row(
            "key 257 characters",
            &[b"foo=1", key_257.as_bytes()],
            drops_state(),
        ),
        state_row("key with space before =", &[b"foo =1"], drops_state()),
        state_row("key uppercase", &[b"FOO=1"], drops_state()),
        state_row("key with .", &[b"foo.bar=1"], drops_state()),
        state_row("key starting with @", &[b"@foo=1,bar=2"], drops_state()),
        state_row("key starting with _", &[b"_foo=1"], drops_state()),
        // Level 1's multi-tenant rule (one `@`, tenant <= 241, system <= 14 characters,
        // system starting with a letter) is not part of Level 2: these keys are valid.
        state_row(
            "Level 2 key foo@",
            &[b"foo@=1,bar=2"],
            keeps_state("foo@=1,bar=2"),
        ),
        state_row(
            "Level 2 key foo@@bar",
            &[b"foo@@bar=1,bar=2"],
            keeps_state("foo@@bar=1,bar=2"),
        ),
        state_row(
            "Level 2 key foo@bar@baz",
            &[b"foo@bar@baz=1,bar=2"],
            keeps_state("foo@bar@baz=1,bar=2"),
        ),
        state_row(
            "Level 2 key tenant of 242",
            &[b"foo=1", tenant_242.as_bytes()],
            keeps_state(&format!("foo=1,{tenant_242}")),
        ),
        state_row(
            "Level 2 key system of 15",
            &[b"foo=1", system_15.as_bytes()],
            keeps_state(&format!("foo=1,{system_15}")),
        ),
        // --- tracestate values --------------------------------------------------------------
        state_row("value with =", &[b"foo=bar=baz"], drops_state()),
        state_row("empty value", &[b"foo=,bar=3"], drops_state()),
        state_row(
            "value leading spaces kept",
            &[b"foo=  1"],
            keeps_state("foo=  1"),
        ),
        state_row(
            "value 256 characters",
            &[value_256.as_bytes()],
            keeps_state(&value_256),
        ),
        state_row(
            "value 257 characters",
            &[value_257.as_bytes()],
            drops_state(),
        ),
        state_row("value with a tab inside", &[b"foo=a\tb"], drops_state()),
        // --- tracestate size limit (512): truncation by whole entries -----------------------
        state_row(
            "over 512: long entry dropped first",
            &[with_long.as_bytes()],
            keeps_state(&shorts[..8].join(",")),
        ),
        state_row(
            "over 512: entries dropped from the end",
            &[twelve.as_bytes()],
            keeps_state(&shorts[..9].join(",")),
        ),
    ];

    // --- several callbacks: one trace, a new parent id for each call ----------------------
    let several = [
        Case {
            calls: 3,
            ..row(
                "3 calls, valid traceparent",
                &tp_name("traceparent"),
                continues(0x01),
            )
        },
        Case {
            calls: 3,
            ..row("3 calls, no traceparent", &[], Restarts)
        },
        Case {
            calls: 3,
            ..tp_row(
                "3 calls, invalid traceparent",
                &format!("00-{}-{PARENT}-01", "0".repeat(32)),
                Restarts,
            )
        },
        Case {
            calls: 3,
            ..state_row(
                "3 calls, tracestate on each",
                &[b"foo=1", b"bar=2"],
                keeps_state("foo=1,bar=2"),
            )
        },
    ];
    table.extend(several);
    table
}

/// What the harness received on one callback.
#[derive(Debug)]
struct Callback {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The harness side: records every callback and answers 200.
async fn harness(listener: TcpListener, received: mpsc::UnboundedSender<Callback>) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = received.clone();
        tokio::spawn(async move {
            let record = move |request: Request<Incoming>| {
                let received = received.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(Collected::to_bytes)
                        .unwrap_or_default();
                    let _ = received.send(Callback {
                        path,
                        headers: parts.headers,
                        body,
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            };
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(record))
                .await;
        });
    }
}

/// Writes `POST /test` by hand, so header names keep their casing, repeated fields stay
/// separate and values carry any byte; returns the response status code.
async fn post_test(
    service: SocketAddr,
    headers: &[(String, Vec<u8>)],
    body: &str,
) -> io::Result<u16> {
    let mut head = format!(
        "POST /test HTTP/1.1\r\nhost: {service}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    let mut request = Vec::new();
    for (name, value) in headers {
        let _ = write!(head, "{name}: ");
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        head.clear();
    }
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.as_bytes());

    let mut stream = TcpStream::connect(service).await?;
    stream.write_all(&request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let status = response
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok());
    status.ok_or_else(|| io::Error::other("no HTTP/1.1 status line in the response"))
}

/// A `traceparent` as this server must send it: version 00, lowercase hex, non-zero ids.
struct Sent {
    trace_id: String,
    parent_id: String,
    flags: u8,
}

fn parse_sent(value: &str) -> Result<Sent, String> {
    let fields: Vec<&str> = value.split('-').collect();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match fields.as_slice() {
        ["00", trace, parent, flags]
            if lower_hex(trace, 32) && lower_hex(parent, 16) && lower_hex(flags, 2) =>
        {
            if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
                return Err(format!("all-zero id in traceparent {value:?}"));
            }
            let flags = u8::from_str_radix(flags, 16).map_err(|e| e.to_string())?;
            Ok(Sent {
                trace_id: (*trace).to_owned(),
                parent_id: (*parent).to_owned(),
                flags,
            })
        }
        _ => Err(format!("malformed traceparent {value:?}")),
    }
}

/// Checks one case's callbacks; returns what is wrong, if anything.
fn check(case: &Case, callbacks: &[Callback]) -> Result<(), String> {
    let mut trace_ids = HashSet::new();
    let mut parent_ids = HashSet::new();
    for callback in callbacks {
        if callback.body.as_ref() != b"[]" {
            return Err(format!(
                "{}: body {:?}, not the arguments []",
                callback.path, callback.body
            ));
        }
        let traceparents: Vec<_> = callback.headers.get_all("traceparent").iter().collect();
        let [traceparent] = traceparents.as_slice() else {
            return Err(format!(
                "{}: {} traceparent headers",
                callback.path,
                traceparents.len()
            ));
        };
        let sent = parse_sent(traceparent.to_str().map_err(|e| e.to_string())?)?;
        let states: Vec<_> = callback.headers.get_all("tracestate").iter().collect();
        let tracestate = match states.as_slice() {
            [] => None,
            [one] => Some(one.to_str().map_err(|e| e.to_string())?.to_owned()),
            _ => {
                return Err(format!(
                    "{}: {} tracestate headers",
                    callback.path,
                    states.len()
                ));
            }
        };
        match &case.outcome {
            Outcome::Continues {
                flags,
                tracestate: expected,
            } => {
                if sent.trace_id != TRACE {
                    return Err(format!("trace id {} is not the caller's", sent.trace_id));
                }
                if sent.parent_id == PARENT {
                    return Err("the caller's parent id was passed on unchanged".to_owned());
                }
                if sent.flags != *flags {
                    return Err(format!("flags {:02x}, expected {flags:02x}", sent.flags));
                }
                if tracestate != *expected {
                    return Err(format!("tracestate {tracestate:?}, expected {expected:?}"));
                }
            }
            Outcome::Restarts => {
                let reused = case
                    .headers
                    .iter()
                    .any(|(_, value)| value.windows(32).any(|w| w == sent.trace_id.as_bytes()));
                if reused || sent.trace_id == TRACE {
                    return Err(format!(
                        "trace id {} was taken from the request",
                        sent.trace_id
                    ));
                }
                if sent.flags != 0x03 {
                    return Err(format!(
                        "a new trace has flags {:02x}, expected 03",
                        sent.flags
                    ));
                }
                if tracestate.is_some() {
                    return Err(format!("a new trace carries tracestate {tracestate:?}"));
                }
            }
        }
        trace_ids.insert(sent.trace_id);
        parent_ids.insert(sent.parent_id);
    }
    if trace_ids.len() != 1 {
        return Err(format!(
            "the calls of one request span {} traces",
            trace_ids.len()
        ));
    }
    if parent_ids.len() != callbacks.len() {
        return Err(format!(
            "{} calls share {} parent ids",
            callbacks.len(),
            parent_ids.len()
        ));
    }
    Ok(())
}

async fn start() -> (SocketAddr, SocketAddr, mpsc::UnboundedReceiver<Callback>) {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let service_listener = TcpListener::bind(loopback).await.expect("bind the service");
    let harness_listener = TcpListener::bind(loopback).await.expect("bind the harness");
    let service = service_listener.local_addr().expect("service address");
    let harness_addr = harness_listener.local_addr().expect("harness address");
    tokio::spawn(service::serve(service_listener));
    let (sender, received) = mpsc::unbounded_channel();
    tokio::spawn(harness(harness_listener, sender));
    (service, harness_addr, received)
}

#[tokio::test]
async fn every_case_of_the_table() {
    let (service, harness, mut received) = start().await;
    let table = table();
    assert!(table.len() >= 40, "the table holds {} cases", table.len());
    let mut failures = Vec::new();
    for (index, case) in table.iter().enumerate() {
        let urls: Vec<String> = (0..case.calls)
            .map(|call| format!("http://{harness}/callback/{index}/{call}"))
            .collect();
        let body = serde_json::Value::Array(
            urls.iter()
                .map(|url| serde_json::json!({ "url": url, "arguments": [] }))
                .collect(),
        )
        .to_string();
        let status =
            tokio::time::timeout(ROUND_TRIP, post_test(service, &case.headers, &body)).await;
        match status {
            Ok(Ok(200)) => {}
            Ok(Ok(status)) => {
                failures.push(format!("{}: status {status}", case.name));
                continue;
            }
            Ok(Err(error)) => {
                failures.push(format!("{}: {error}", case.name));
                continue;
            }
            Err(_) => {
                failures.push(format!("{}: no answer within {ROUND_TRIP:?}", case.name));
                continue;
            }
        }
        // The service answers only after its calls: every callback is already here.
        let mut by_path = BTreeMap::new();
        while let Ok(callback) = received.try_recv() {
            by_path.insert(callback.path.clone(), callback);
        }
        let mut callbacks = Vec::new();
        for call in 0..case.calls {
            if let Some(callback) = by_path.remove(&format!("/callback/{index}/{call}")) {
                callbacks.push(callback);
            }
        }
        if callbacks.len() != case.calls || !by_path.is_empty() {
            failures.push(format!(
                "{}: {} of {} callbacks before the answer, {} unexpected",
                case.name,
                callbacks.len(),
                case.calls,
                by_path.len()
            ));
            continue;
        }
        if let Err(why) = check(case, &callbacks) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn nested_arguments_are_the_callback_body() {
    let (service, harness, mut received) = start().await;
    let arguments = serde_json::json!([{ "url": "http://127.0.0.1:9/next", "arguments": [] }]);
    let body = serde_json::json!([{ "url": format!("http://{harness}/callback/nested"), "arguments": arguments }]);
    let headers = [("traceparent".to_owned(), tp("01").into_bytes())];
    let status = tokio::time::timeout(ROUND_TRIP, post_test(service, &headers, &body.to_string()))
        .await
        .expect("an answer in time")
        .expect("an HTTP answer");
    assert_eq!(status, 200);
    let callback = received
        .try_recv()
        .expect("the callback came before the answer");
    assert_eq!(callback.path, "/callback/nested");
    let forwarded: serde_json::Value = serde_json::from_slice(&callback.body).expect("JSON body");
    assert_eq!(forwarded, arguments);
}

#[tokio::test]
async fn anything_but_post_test_is_refused() {
    let (service, _, mut received) = start().await;
    let status = tokio::time::timeout(ROUND_TRIP, post_test(service, &[], "not json"))
        .await
        .expect("an answer in time")
        .expect("an HTTP answer");
    assert_eq!(status, 400, "a body that is not a JSON array");
    assert!(
        received.try_recv().is_err(),
        "no callback for a refused request"
    );
}
