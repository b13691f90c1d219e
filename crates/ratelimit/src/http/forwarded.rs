//! The client address a trusted proxy recorded: the `X-Forwarded-For` entry, or the
//! `Forwarded` element's `for` parameter (RFC 7239), a given number of hops from the right.
//!
//! Proxies append; clients can write anything to the left of what the proxies appended. So
//! both readers count from the right and never look further left than asked: with `hops`
//! trusted proxies in front of the server, the client is the entry `hops` from the right
//! (1: the last). Anything that does not give an address there is `None`.
//!
//! `X-Forwarded-For` has no specification: its fields, in order, form one list split at
//! commas, each entry trimmed of spaces and tabs. An entry is an IPv4 or IPv6 address,
//! optionally bracketed (`[2001:db8::1]`), and either with a port (`192.0.2.1:4711`,
//! `[2001:db8::1]:4711`). Entries left of the one read are never parsed.
//!
//! `Forwarded` is parsed in full, since a quoted string may hold commas: every field, in
//! order, is a non-empty list of elements (`element *(OWS "," OWS element)`), an element is
//! `pair *(OWS ";" OWS pair)`, a pair `token "=" (token / quoted-string)`, with parameter
//! names case-insensitive and at most one `for` per element. Anything else anywhere in the
//! field makes the whole field unusable. The `for` value of the chosen element must be an
//! IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port (1 to 5
//! digits, or an obfuscated `_port`); `unknown` and obfuscated identifiers (`_hidden`) are not
//! addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::FORWARDED;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The `X-Forwarded-For` entry `hops` (at least 1) from the right, as an address.
pub(crate) fn x_forwarded_for(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let entry = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|field| field.as_bytes().rsplit(|&b| b == b','))
        .nth(hops.checked_sub(1)?)?;
    let text = std::str::from_utf8(trim_ows(entry)).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| address_and_port(text, is_port))
}

/// The `for` address of the `Forwarded` element `hops` (at least 1) from the right.
pub(crate) fn forwarded(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let mut fors = Vec::new();
    for field in headers.get_all(FORWARDED) {
        Parser::new(field.as_bytes()).elements(&mut fors)?;
    }
    let node = fors[fors.len().checked_sub(hops)?].as_deref()?;
    let text = std::str::from_utf8(node).ok()?;
    address_and_port(text, |port| is_port(port) || is_obfuscated(port))
}

/// `[IPv6]` or IPv4, then nothing, or `:` and a port that `port` accepts.
fn address_and_port(text: &str, port: impl Fn(&str) -> bool) -> Option<IpAddr> {
    let (address, rest) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, rest) = bracketed.split_once(']')?;
            (IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?), rest)
        }
        None => {
            let end = text.find(':').unwrap_or(text.len());
            (
                IpAddr::V4(text[..end].parse::<Ipv4Addr>().ok()?),
                &text[end..],
            )
        }
    };
    (rest.is_empty() || rest.strip_prefix(':').is_some_and(port)).then_some(address)
}

/// A decimal port of 1 to 5 digits (RFC 7239's `port`, not range-checked there either).
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 7239's `obfport`: `_` then letters, digits, `.`, `_`, `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A recursive-descent reader of one `Forwarded` field.
struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Appends each element's `for` value (unquoted), or `None` for an element without one.
    fn elements(mut self, fors: &mut Vec<Option<Vec<u8>>>) -> Option<()> {
        self.skip_ows();
        loop {
            fors.push(self.element()?);
            self.skip_ows();
            match self.peek() {
                None => return Some(()),
                Some(b',') => {
                    self.at += 1;
                    self.skip_ows();
                }
                Some(_) => return None,
            }
        }
    }

    fn element(&mut self) -> Option<Option<Vec<u8>>> {
        let mut found = None;
        loop {
            let name = self.token()?;
            if self.peek() != Some(b'=') {
                return None;
            }
            self.at += 1;
            let value = if self.peek() == Some(b'"') {
                self.quoted()?
            } else {
                self.token()?.to_vec()
            };
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
            let before = self.at;
            self.skip_ows();
            if self.peek() != Some(b';') {
                self.at = before;
                return Some(found);
            }
            self.at += 1;
            self.skip_ows();
        }
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.bytes[start..self.at])
    }

    /// A quoted string's content, escapes removed (RFC 9110 §5.6.4).
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.at += 1;
        let mut content = Vec::new();
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some(content),
                // quoted-pair: HTAB, SP, VCHAR or obs-text.
                b'\\' => {
                    let escaped = self.peek()?;
                    if !matches!(escaped, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) {
                        return None;
                    }
                    self.at += 1;
                    content.push(escaped);
                }
                // qdtext
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => content.push(b),
                _ => return None,
            }
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_counts_from_the_right_across_fields() {
        let h = headers(
            X_FORWARDED_FOR,
            &["forged, 203.0.113.9", " 198.51.100.2 ,10.0.0.1"],
        );
        assert_eq!(x_forwarded_for(&h, 1), ip("10.0.0.1"));
        assert_eq!(x_forwarded_for(&h, 2), ip("198.51.100.2"));
        assert_eq!(x_forwarded_for(&h, 3), ip("203.0.113.9"));
        // The leftmost entry is garbage and is only read when asked for.
        assert_eq!(x_forwarded_for(&h, 4), None);
        assert_eq!(x_forwarded_for(&h, 5), None);
        assert_eq!(x_forwarded_for(&HeaderMap::new(), 1), None);
    }

    #[test]
    fn x_forwarded_for_entries_may_carry_brackets_and_ports() {
        for (entry, expected) in [
            ("192.0.2.1", ip("192.0.2.1")),
            ("192.0.2.1:4711", ip("192.0.2.1")),
            ("2001:db8::1", ip("2001:db8::1")),
            ("[2001:db8::1]", ip("2001:db8::1")),
            ("[2001:db8::1]:443", ip("2001:db8::1")),
            ("[192.0.2.1]", None),
            ("192.0.2.1:", None),
            ("192.0.2.1:123456", None),
            ("192.0.2.1:+80", None),
            ("[2001:db8::1]x", None),
            ("unknown", None),
            ("", None),
            ("01.2.3.4", None),
        ] {
            let h = headers(X_FORWARDED_FOR, &[&format!("1.1.1.1, {entry}")]);
            assert_eq!(x_forwarded_for(&h, 1), expected, "{entry:?}");
        }
    }

    #[test]
    fn forwarded_reads_the_for_parameter_of_the_chosen_element() {
        let h = headers(
            "forwarded",
            &[
                r#"for=6.6.6.6;proto=http, For="[2001:db8:cafe::17]:4711""#,
                "for=192.0.2.60;proto=https;by=203.0.113.43 ,  proto=http",
            ],
        );
        assert_eq!(forwarded(&h, 1), None, "no `for` in the last element");
        assert_eq!(forwarded(&h, 2), ip("192.0.2.60"));
        assert_eq!(forwarded(&h, 3), ip("2001:db8:cafe::17"));
        assert_eq!(forwarded(&h, 4), ip("6.6.6.6"));
        assert_eq!(forwarded(&h, 5), None);
    }

    #[test]
    fn forwarded_nodes_that_are_not_addresses_give_none() {
        for (value, expected) in [
            (r#"for="192.0.2.1:8080""#, ip("192.0.2.1")),
            (r#"for="192.0.2.1:_p1""#, ip("192.0.2.1")),
            (r#"for="[::1]""#, ip("::1")),
            (r#"for="\[::1\]""#, ip("::1")),
            ("for=unknown", None),
            ("for=_hidden", None),
            (r#"for="2001:db8::1""#, None),
            (r#"for="[2001:db8::1]x""#, None),
            (r#"for="192.0.2.1:""#, None),
        ] {
            assert_eq!(
                forwarded(&headers("forwarded", &[value]), 1),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn a_malformed_forwarded_field_anywhere_gives_none() {
        for value in [
            "for=192.0.2.1, garbage, for=192.0.2.2",
            "for=[::1]",
            "for=192.0.2.1;for=192.0.2.2",
            "for=192.0.2.1,",
            r#"for="192.0.2.1"#,
            "for =192.0.2.1",
            "for=",
            "",
            "for=192.0.2.1;",
        ] {
            assert_eq!(
                forwarded(&headers("forwarded", &[value]), 1),
                None,
                "{value:?}"
            );
        }
        // A comma inside a quoted string is not a separator.
        let quoted = headers("forwarded", &[r#"for=192.0.2.9;x="a, b", for=192.0.2.1"#]);
        assert_eq!(forwarded(&quoted, 2), ip("192.0.2.9"));
    }
}
