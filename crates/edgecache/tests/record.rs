//! The shared tier's record format: any record the cache can build comes back unchanged, a
//! truncated or extended one is refused, and damaged bytes decode to an error or to a record
//! that itself round-trips, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use infra_edgecache::http::{
    CacheControl, Exchange, Freshness, Heuristic, RECORD_VERSION, Record, VaryKey,
};
use proptest::prelude::*;

/// Response directives the freshness of a record is computed from.
// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; the strategy is test-only.
#[allow(clippy::disallowed_types)]
fn directives() -> impl Strategy<Value = String> {
    let directive = prop_oneof![
        (0u32..100_000).prop_map(|n| format!("max-age={n}")),
        (0u32..100_000).prop_map(|n| format!("s-maxage={n}")),
        (0u32..100_000).prop_map(|n| format!("stale-while-revalidate={n}")),
        (0u32..100_000).prop_map(|n| format!("stale-if-error={n}")),
        Just("no-cache".to_owned()),
        Just("must-revalidate".to_owned()),
        Just("public".to_owned()),
    ];
    proptest::collection::vec(directive, 0..5).prop_map(|list| list.join(", "))
}

fn field_name() -> impl Strategy<Value = HeaderName> {
    "[a-z][a-z0-9-]{0,12}".prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
}

#[allow(clippy::disallowed_types)] // `prop_oneof!`, as above
fn field_value() -> impl Strategy<Value = HeaderValue> {
    proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..40)
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap())
}

prop_compose! {
    fn record()(
        status in 100u16..1000,
        cache_control in directives(),
        age in proptest::option::of(0u32..100_000),
        fields in proptest::collection::vec((field_name(), field_value()), 0..8),
        vary_names in proptest::collection::vec(field_name(), 0..4),
        request_values in proptest::collection::vec(proptest::option::of(field_value()), 4),
        tags in proptest::collection::vec("[a-z0-9-]{1,20}", 0..5),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        sent_at in 0u64..2_000_000_000,
        round_trip_nanos in 0u64..5_000_000_000,
        expires_in in (any::<u64>(), 0u32..1_000_000_000),
    ) -> Record {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_str(&cache_control).unwrap());
        if let Some(age) = age {
            headers.insert("age", HeaderValue::from(age));
        }
        for (name, value) in fields {
            headers.append(name, value);
        }
        let vary_line = vary_names.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
        let mut vary_response = HeaderMap::new();
        vary_response.insert("vary", HeaderValue::from_str(&vary_line).unwrap());
        let mut request = HeaderMap::new();
        for (name, value) in vary_names.iter().zip(request_values) {
            if let Some(value) = value {
                request.append(name, value);
            }
        }
        let status = StatusCode::from_u16(status).unwrap();
        let request_time = UNIX_EPOCH + Duration::from_secs(sent_at);
        let exchange = Exchange {
            request_time,
            response_time: request_time + Duration::from_nanos(round_trip_nanos),
        };
        let cc = CacheControl::from_headers(&headers);
        Record {
            status,
            freshness: Freshness::of_response(status, &headers, &cc, exchange, Heuristic::default()),
            headers,
            body: Bytes::from(body),
            vary: VaryKey::new(&vary_response, &request).unwrap(),
            tags: tags.into_iter().map(Into::into).collect(),
            expires_in: Duration::new(expires_in.0, expires_in.1),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_record_round_trips_and_a_cut_or_extended_one_is_refused(record in record()) {
        let bytes = record.encode();
        prop_assert_eq!(&Record::decode(&bytes).unwrap(), &record);
        for cut in 0..bytes.len() {
            prop_assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Record::decode(&longer).is_err());
    }

    #[test]
    fn damaged_bytes_are_an_error_or_a_record_that_round_trips(
        record in record(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = record.encode();
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(decoded) = Record::decode(&bytes) {
            prop_assert_eq!(Record::decode(&decoded.encode()).unwrap(), decoded);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut framed = b"EC".to_vec();
        framed.push(RECORD_VERSION);
        framed.extend_from_slice(&bytes);
        let _ = Record::decode(&framed);
        let _ = Record::decode(&bytes);
    }
}

#[test]
fn a_huge_declared_length_is_refused_without_allocating_it() {
    let record = Record {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        vary: VaryKey::default(),
        tags: Vec::new(),
        freshness: Freshness::of_response(
            StatusCode::OK,
            &HeaderMap::new(),
            &CacheControl::default(),
            Exchange {
                request_time: SystemTime::UNIX_EPOCH,
                response_time: SystemTime::UNIX_EPOCH,
            },
            Heuristic::default(),
        ),
        expires_in: Duration::from_secs(1),
    };
    let mut bytes = record.encode();
    // The body's length field is the last four bytes of an empty body's record.
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Record::decode(&bytes).unwrap_err().to_string(),
        "not a stored response record: truncated"
    );
    // The header count likewise: four billion fields promised, none there.
    let mut bytes = record.encode();
    let headers_at = bytes.len() - 4 - 1 - 1 - 4;
    bytes[headers_at..headers_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(Record::decode(&bytes).is_err());
    // Another version is refused.
    let mut bytes = record.encode();
    bytes[2] = RECORD_VERSION + 1;
    assert!(Record::decode(&bytes).is_err());
}

/// `http::HeaderMap` holds at most 32 768 fields and panics past that on `append`; a record
/// from Redis may claim more (each costs only ten bytes), and must be refused, not panic.
#[test]
fn a_record_with_more_fields_than_a_header_map_holds_is_refused() {
    let count: u32 = 40_000;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"EC");
    bytes.push(RECORD_VERSION);
    bytes.extend_from_slice(&200u16.to_be_bytes());
    for _ in 0..2 {
        // lifetime, initial age
        bytes.extend_from_slice(&[0; 12]);
    }
    bytes.extend_from_slice(&[0, 0, 0]); // flags, no stale-while-revalidate, no stale-if-error
    bytes.extend_from_slice(&[0; 12]); // expires_in
    bytes.extend_from_slice(&count.to_be_bytes());
    for index in 0..count {
        // Distinct four-letter names, so every field is a new entry in the map.
        let name: Vec<u8> = (0..4)
            .map(|digit| b'a' + u8::try_from(index / 26u32.pow(digit) % 26).unwrap())
            .collect();
        bytes.extend_from_slice(&4u16.to_be_bytes());
        bytes.extend_from_slice(&name);
        bytes.extend_from_slice(&0u32.to_be_bytes());
    }
    bytes.extend_from_slice(&[0, 0]); // no vary fields, no tags
    bytes.extend_from_slice(&0u32.to_be_bytes()); // empty body
    assert!(Record::decode(&bytes).is_err());
}
