//! Cache-Control, Age, Date, Expires, Vary and 304 merging over arbitrary header blocks:
//! nothing panics, parsing stays within its limits, and the parsed values agree with plain
//! models of the rules (delta-seconds saturating at 2^31, qualified `no-cache` / `private`
//! lists within their bound, a Vary key matching the request it was made from, a fresh
//! decision only for a fresh age, a merged 304's fields present).
//!
//! The input is text: two bytes (status, resident seconds), then response header lines
//! (`name: value`), a blank line, and request header lines.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use infra_edgecache::http::{
    CacheControl, Decision, Delta, Exchange, Freshness, Heuristic, MAX_CACHE_CONTROL_BYTES,
    MAX_DIRECTIVES, MAX_QUALIFIED_FIELDS, RequestFacts, ResponseFacts, SetCookiePolicy, VaryKey,
    merge_not_modified, storability, validates, without_hop_by_hop,
};
use libfuzzer_sys::fuzz_target;

fn header_block(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// The model of one `max-age=DIGITS` directive: the number, saturating at 2^31.
fn model_delta(digits: &[u8]) -> u32 {
    let mut value: u64 = 0;
    for &digit in digits {
        value = (value * 10 + u64::from(digit - b'0')).min(1 << 31);
    }
    u32::try_from(value).unwrap()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = StatusCode::from_u16(100 + u16::from(data[0]) * 2).unwrap_or(StatusCode::OK);
    let resident = Duration::from_secs(u64::from(data[1]) * 7);
    let text = &data[2..];
    let split = text
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(text.len());
    let response = header_block(&text[..split]);
    let request = header_block(text.get(split + 2..).unwrap_or_default());

    // Limits: inside both, the whole field is read.
    let cc = CacheControl::from_headers(&response);
    let lines: Vec<&[u8]> = response
        .get_all("cache-control")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let bytes: usize = lines.iter().map(|line| line.len()).sum();
    let pieces: usize = lines
        .iter()
        .map(|line| line.iter().filter(|&&b| b == b',').count() + 1)
        .sum();
    if bytes <= MAX_CACHE_CONTROL_BYTES && pieces <= MAX_DIRECTIVES {
        assert!(!cc.exceeded_limits());
    }
    assert!(cc.extensions().count() <= MAX_DIRECTIVES);
    // Qualified `no-cache` / `private` lists stay bounded; a qualified directive restricts
    // fields only while its unqualified form is off.
    assert!(cc.no_cache_fields().len() <= MAX_QUALIFIED_FIELDS);
    assert!(cc.private_fields().len() <= MAX_QUALIFIED_FIELDS);

    // delta-seconds: one `max-age=DIGITS` line reads as the model says.
    if let [line] = lines.as_slice()
        && let Some(digits) = line.strip_prefix(b"max-age=")
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
    {
        assert_eq!(cc.max_age(), Some(Delta::Seconds(model_delta(digits))));
    }

    let request_cc = CacheControl::from_headers(&request);
    let _ = storability(
        RequestFacts {
            method: &Method::GET,
            headers: &request,
            cache_control: &request_cc,
        },
        ResponseFacts {
            status,
            headers: &response,
            cache_control: &cc,
        },
        SetCookiePolicy::default(),
    );

    let arrival: SystemTime = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let exchange = Exchange {
        request_time: arrival,
        response_time: arrival,
    };
    let freshness = Freshness::of_response(status, &response, &cc, exchange, Heuristic::default());
    let age = freshness.initial_age().saturating_add(resident);
    let decision = freshness.decide(age, &request_cc);
    if decision == Decision::Fresh {
        assert!(freshness.is_fresh(age));
    }
    let _ = freshness.stale_horizon();

    // A secondary key always selects the request it was made from.
    if let Some(key) = VaryKey::new(&response, &request) {
        assert!(key.matches(&request));
    }

    // A 304 merged into the request block (as if it were the stored response).
    let mut stored = without_hop_by_hop(&request);
    let _ = validates(&stored, &response);
    merge_not_modified(&mut stored, &response);
    let hop = without_hop_by_hop(&response);
    for name in hop.keys() {
        if ![
            "content-length",
            "content-encoding",
            "content-range",
            "transfer-encoding",
        ]
        .contains(&name.as_str())
        {
            assert!(stored.contains_key(name), "{name} from the 304 is missing");
        }
    }
});
