//! The work queue over Redis Streams against plain Redis Streams commands through the `redis`
//! crate, per message: one 100-byte message sent, received and acknowledged.
//!
//! - `infra`: `RedisQueue::send`, `try_receive` and `ack`: three round trips, each one Lua
//!   script (the receive looks for an expired lease first; the ack checks the attempt against
//!   the pending entries list, then acknowledges and deletes the entry).
//! - `plain`: `XADD`, `XREADGROUP … >` and a pipelined `XACK` + `XDEL`: three round trips
//!   with no checks — the floor a Streams work queue can reach on one connection.
//!
//! Both run on one local `redis-server` started through infra-testkit (the group is skipped
//! with a line when the binary is missing), at Redis's default `appendfsync everysec`:
//! fsyncing every write, as the test kit does, would measure the disk.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infra_mqueue::redis::{RedisOptions, RedisQueue};
use redis::Value;

const PAYLOAD: [u8; 100] = [7; 100];

fn mqueue_redis(c: &mut Criterion) {
    let Some(server) = infra_testkit::RedisServer::start() else {
        println!("mqueue/redis: skipped, no redis-server");
        return;
    };
    let reply = server
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .expect("the server answers");
    assert_eq!(reply, "+OK");
    let queue =
        RedisQueue::new(&server.url(), "bench", RedisOptions::default()).expect("valid options");
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let mut connection = client.get_connection().expect("connected");
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("plain")
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut connection)
        .expect("group created");

    let mut group = c.benchmark_group("mqueue/redis");
    group.bench_function("infra", |b| {
        b.iter(|| {
            queue.send(black_box(&PAYLOAD[..])).expect("sent");
            let delivery = queue.try_receive().expect("received").expect("a message");
            queue.ack(&delivery).expect("acked");
        });
    });
    group.bench_function("plain", |b| {
        b.iter(|| {
            let _: String = redis::cmd("XADD")
                .arg("plain")
                .arg("*")
                .arg("p")
                .arg(black_box(&PAYLOAD[..]))
                .query(&mut connection)
                .expect("added");
            let read: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg("bench")
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg("plain")
                .arg(">")
                .query(&mut connection)
                .expect("read");
            let id = entry_id(&read).expect("a message");
            let _: (i64, i64) = redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg("plain")
                .arg("workers")
                .arg(&id)
                .cmd("XDEL")
                .arg("plain")
                .arg(&id)
                .query(&mut connection)
                .expect("acked");
        });
    });
    group.finish();
}

/// The id of the first entry of an `XREADGROUP` reply (RESP2: streams, entries, [id, fields]).
fn entry_id(reply: &Value) -> Option<Vec<u8>> {
    let Value::Array(streams) = reply else {
        return None;
    };
    let Value::Array(stream) = streams.first()? else {
        return None;
    };
    let Value::Array(entries) = stream.get(1)? else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    match entry.first()? {
        Value::BulkString(id) => Some(id.clone()),
        _ => None,
    }
}

criterion_group!(benches, mqueue_redis);
criterion_main!(benches);
