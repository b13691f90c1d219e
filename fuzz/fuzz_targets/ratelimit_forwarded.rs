//! `ClientIp` behind trusted proxies (infra-ratelimit's `tower` feature): whatever bytes the
//! `X-Forwarded-For` and `Forwarded` fields hold, reading the client address never panics and
//! gives exactly what a simple reference reader of the documented rules gives (an address, no
//! field or a proxy that does not know the client, or an unusable one). And what a client
//! writes left of the proxies' elements never changes a key: the first `Forwarded` line
//! stands for the client's bytes, the others for what the proxies wrote; whenever the
//! proxies' lines alone give a key, the same key comes with the client's bytes prepended as a
//! line of their own or joined to the proxies' first line by a comma.
//!
//! The input is text: the first line is the number of trusted proxies (0 to 99), then one
//! `name: value` header per line, so seeds are ordinary header blocks.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderName, HeaderValue, Request};
use infra_ratelimit::http::{ClientIp, KeyExtractor, NoKey};
use libfuzzer_sys::fuzz_target;

/// Removes spaces and tabs at both ends.
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// What `ClientIp` keys by: IPv4-mapped and `64:ff9b::/96` addresses as IPv4, other IPv6
/// addresses by their first four segments; no unspecified address (before that masking:
/// `::1` is the network `::`).
fn client(address: IpAddr) -> Option<IpAddr> {
    let address = match address.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        other => other,
    };
    if address.is_unspecified() {
        return None;
    }
    Some(match address {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    })
}

/// What the entry or element at the chosen position says of the client.
enum Said {
    Address(IpAddr),
    /// `unknown`, or an obfuscated identifier: the proxy does not know or tell the address.
    Unknown,
    Nothing,
}

/// The extractor's answer for a field that is there: a key, none (the proxy does not know
/// the client), or unusable.
fn outcome(said: Said) -> Result<IpAddr, bool> {
    match said {
        Said::Address(address) => client(address).ok_or(true),
        Said::Unknown => Err(false),
        Said::Nothing => Err(true),
    }
}

/// An extractor's answer in the same terms: `Err(false)` is no field, `Err(true)` unusable.
fn observed(result: Result<IpAddr, NoKey>) -> Result<IpAddr, bool> {
    result.map_err(|no_key| no_key != NoKey::Missing)
}

fn digits(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit())
}

/// `X-Forwarded-For`: every value joined by commas, split at commas, the entry `hops` from
/// the end, trimmed: an address, `[v6]`, `[v6]:port` or `v4:port`; or `unknown` in any case.
fn reference_xff(values: &[&[u8]], hops: usize) -> Said {
    let joined = values.join(&b","[..]);
    let entries: Vec<&[u8]> = joined.split(|&b| b == b',').collect();
    if hops == 0 || hops > entries.len() {
        return Said::Nothing;
    }
    let entry = trim(entries[entries.len() - hops]).to_ascii_lowercase();
    if entry == b"unknown" {
        return Said::Unknown;
    }
    std::str::from_utf8(&entry)
        .ok()
        .and_then(xff_address)
        .map_or(Said::Nothing, Said::Address)
}

/// An `X-Forwarded-For` entry's address.
fn xff_address(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']')?;
        let after = &inner[close + 1..];
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(digits);
        return port_ok
            .then(|| inner[..close].parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (v4, port) = text.rsplit_once(':')?;
    digits(port)
        .then(|| v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| tchar(b))
}

/// Splits at `separator` outside quoted strings; `None` if a quote or escape is unfinished.
fn split_outside_quotes(bytes: &[u8], separator: u8) -> Option<Vec<&[u8]>> {
    let (mut pieces, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && b == separator {
            pieces.push(&bytes[start..i]);
            start = i + 1;
        }
    }
    if quoted || escaped {
        return None;
    }
    pieces.push(&bytes[start..]);
    Some(pieces)
}

/// A whole quoted string's content, unescaped, or a token as it is.
fn value(bytes: &[u8]) -> Option<Vec<u8>> {
    if token(bytes) {
        return Some(bytes.to_vec());
    }
    let inner = bytes.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut content = Vec::new();
    let mut iter = inner.iter();
    while let Some(&b) = iter.next() {
        match b {
            b'\\' => content.push(*iter.next()?),
            b'"' => return None,
            b if b == b'\t' || b >= 0x20 && b != 0x7f => content.push(b),
            _ => return None,
        }
    }
    Some(content)
}

/// The `for` value of each element of one `Forwarded` value; `None` if it is malformed.
/// Empty elements (nothing but spaces and tabs) are no elements; empty pairs are allowed.
fn elements(field: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let mut fors = Vec::new();
    for element in split_outside_quotes(field, b',')? {
        let element = trim(element);
        if element.is_empty() {
            continue;
        }
        let mut found = None;
        for pair in split_outside_quotes(element, b';')? {
            let pair = trim(pair);
            if pair.is_empty() {
                continue;
            }
            let equals = pair.iter().position(|&b| b == b'=')?;
            let (name, rest) = (&pair[..equals], &pair[equals + 1..]);
            if !token(name) {
                return None;
            }
            let value = value(rest)?;
            if name.eq_ignore_ascii_case(b"for") && found.replace(value).is_some() {
                return None;
            }
        }
        fors.push(found);
    }
    Some(fors)
}

/// The elements of `values[line][start..]` and of every later line, if all parse.
fn tail_elements(values: &[&[u8]], line: usize, start: usize) -> Option<Vec<Option<Vec<u8>>>> {
    let mut fors = elements(&values[line][start..])?;
    for field in &values[line + 1..] {
        fors.extend(elements(field)?);
    }
    Some(fors)
}

/// `Forwarded`: the shortest tail of the values, starting at the start of a line or after a
/// comma, that parses in full into exactly `hops` elements; the `for` of its first element,
/// 64 bytes at most: `v4` or `[v6]`, or `unknown` in any case or `_` and letters, digits,
/// `.`, `_`, `-` (no address), then nothing or `:` and digits or `_` and letters, digits,
/// `.`, `_`, `-`.
fn reference_forwarded(values: &[&[u8]], hops: usize) -> Said {
    forwarded_node(values, hops).unwrap_or(Said::Nothing)
}

fn forwarded_node(values: &[&[u8]], hops: usize) -> Option<Said> {
    if hops == 0 {
        return None;
    }
    let mut chosen = None;
    'search: for line in (0..values.len()).rev() {
        let commas = values[line].iter().enumerate().filter(|&(_, &b)| b == b',');
        let starts: Vec<usize> = std::iter::once(0)
            .chain(commas.map(|(i, _)| i + 1))
            .collect();
        for &start in starts.iter().rev() {
            if let Some(fors) = tail_elements(values, line, start).filter(|f| f.len() == hops) {
                chosen = Some(fors);
                break 'search;
            }
        }
    }
    let node = chosen?.swap_remove(0)?;
    if node.len() > 64 {
        return None;
    }
    let text = String::from_utf8(node).ok()?;
    let obfuscated = |text: &str| {
        text.strip_prefix('_').is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
    };
    let port_ok = |after: &str| {
        after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|port| digits(port) || obfuscated(port))
    };
    let colon = text.find(':').unwrap_or(text.len());
    let (name, after) = text.split_at(colon);
    if (name.eq_ignore_ascii_case("unknown") || obfuscated(name)) && port_ok(after) {
        return Some(Said::Unknown);
    }
    let (address, after) = if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']')?;
        (
            IpAddr::V6(inner[..close].parse().ok()?),
            &inner[close + 1..],
        )
    } else {
        (IpAddr::V4(name.parse().ok()?), after)
    };
    port_ok(after).then_some(Said::Address(address))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(hops) = lines
        .next()
        .and_then(|line| std::str::from_utf8(line).ok()?.parse::<usize>().ok())
        .filter(|&hops| hops < 100)
    else {
        return;
    };
    let mut request = Request::new(());
    let (mut xff, mut forwarded) = (Vec::new(), Vec::new());
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // What a server would have refused never reaches an extractor.
        let (Ok(name), Ok(header)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        match name.as_str() {
            "x-forwarded-for" => xff.push(header.as_bytes().to_vec()),
            "forwarded" => forwarded.push(header.as_bytes().to_vec()),
            _ => {}
        }
        request.headers_mut().append(name, header);
    }
    let (parts, ()) = request.into_parts();
    let xff: Vec<&[u8]> = xff.iter().map(Vec::as_slice).collect();
    let forwarded: Vec<&[u8]> = forwarded.iter().map(Vec::as_slice).collect();

    // Zero hops reads the peer, which this request has none of.
    let expected = |values: &[&[u8]], reference: fn(&[&[u8]], usize) -> Said| {
        if hops == 0 || values.is_empty() {
            Err(false)
        } else {
            outcome(reference(values, hops))
        }
    };
    assert_eq!(
        observed(ClientIp::x_forwarded_for(hops).extract(&parts)),
        expected(&xff, reference_xff),
        "X-Forwarded-For {xff:?}, {hops} hops"
    );
    assert_eq!(
        observed(ClientIp::forwarded(hops).extract(&parts)),
        expected(&forwarded, reference_forwarded),
        "Forwarded {forwarded:?}, {hops} hops"
    );

    if let [client_bytes, proxies @ ..] = forwarded.as_slice()
        && !proxies.is_empty()
    {
        let forwarded_key = |lines: &[&[u8]]| {
            let mut request = Request::new(());
            for line in lines {
                let value = HeaderValue::from_bytes(line).expect("joined from valid values");
                request.headers_mut().append(http::header::FORWARDED, value);
            }
            ClientIp::forwarded(hops).extract(&request.into_parts().0)
        };
        if let Ok(key) = forwarded_key(proxies) {
            let mut joined = client_bytes.to_vec();
            joined.push(b',');
            joined.extend_from_slice(proxies[0]);
            let mut same_line = vec![joined.as_slice()];
            same_line.extend_from_slice(&proxies[1..]);
            assert_eq!(forwarded_key(&same_line), Ok(key), "{same_line:?}");
            assert_eq!(forwarded_key(&forwarded), Ok(key), "{forwarded:?}");
        }
    }
});
