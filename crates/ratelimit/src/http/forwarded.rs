//! The client address a trusted proxy recorded: the `X-Forwarded-For` entry, or the
//! `Forwarded` element's `for` parameter (RFC 7239), a given number of hops from the right.
//!
//! Proxies append; clients can write anything to the left of what the proxies appended. So
//! both readers start at the end of the last field line, read right to left, and stop at the
//! element `hops` from the right (1: the last): no byte left of that element and its
//! separator is ever read, so nothing a client prepends (bytes, a malformed element, an
//! unclosed quote, whole field lines) changes the outcome. With no field of that name at all
//! the request has no identity ([`NoKey::Missing`]), nor when the proxy at that position
//! wrote that it does not know the client's address (below); with a field that gives neither
//! at that position, its identity is unusable ([`NoKey::Unusable`]).
//!
//! `X-Forwarded-For` has no specification: its fields, in order, form one list split at
//! commas, each entry trimmed of spaces and tabs. An entry is an IPv4 or IPv6 address,
//! optionally bracketed (`[2001:db8::1]`), and either with a port (`192.0.2.1:4711`,
//! `[2001:db8::1]:4711`), or `unknown` (any case; what Squid writes when told not to forward
//! the address): no client address.
//!
//! `Forwarded`: every field line is a list of elements (`element *(OWS "," OWS element)`,
//! where empty elements, such as a trailing comma leaves, are skipped and not counted, as
//! RFC 9110 requires of list recipients), an element is `[pair] *(OWS ";" OWS [pair])` (empty
//! pairs allowed, as RFC 7239 writes it), a pair `token "=" (token / quoted-string)`, with
//! parameter names case-insensitive and at most one `for` per element.
//! The elements read (the last `hops`) must follow that grammar, each preceded by a comma or
//! the start of its line. The `for` value of the chosen element must be an IPv4 address or a
//! bracketed IPv6 address, optionally followed by `:` and a port (1 to 5 digits, or an
//! obfuscated `_port`). RFC 7239's other nodes, `unknown` (any case) and obfuscated
//! identifiers (`_hidden`), with or without such a port, say the proxy does not know or does
//! not tell the client's address: no client address. A value of more than 64 bytes is
//! neither (the longest address with a decimal port has 53). The work is bounded by the bytes
//! of the elements read, and nothing is allocated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::FORWARDED;

use super::NoKey;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Why a present field gave no address.
const UNUSABLE_X_FORWARDED_FOR: NoKey = NoKey::Unusable {
    reason: "the X-Forwarded-For entry of the trusted proxy is not a client address",
};
const UNUSABLE_FORWARDED: NoKey = NoKey::Unusable {
    reason: "the Forwarded element of the trusted proxy has no client address",
};

/// The `X-Forwarded-For` entry `hops` (at least 1) from the right, as an address.
pub(crate) fn x_forwarded_for(headers: &HeaderMap, hops: usize) -> Result<IpAddr, NoKey> {
    let fields = headers.get_all(X_FORWARDED_FOR);
    if fields.iter().next().is_none() {
        return Err(NoKey::Missing);
    }
    let entry = fields
        .iter()
        .rev()
        .flat_map(|field| field.as_bytes().rsplit(|&b| b == b','))
        .nth(hops.checked_sub(1).ok_or(UNUSABLE_X_FORWARDED_FOR)?)
        .ok_or(UNUSABLE_X_FORWARDED_FOR)?;
    let text = std::str::from_utf8(trim_ows(entry)).map_err(|_| UNUSABLE_X_FORWARDED_FOR)?;
    if text.eq_ignore_ascii_case(UNKNOWN) {
        return Err(NoKey::Missing);
    }
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| address_and_port(text, is_port))
        .ok_or(UNUSABLE_X_FORWARDED_FOR)
}

/// The `for` address of the `Forwarded` element `hops` (at least 1) from the right.
pub(crate) fn forwarded(headers: &HeaderMap, hops: usize) -> Result<IpAddr, NoKey> {
    let fields = headers.get_all(FORWARDED);
    if fields.iter().next().is_none() {
        return Err(NoKey::Missing);
    }
    let mut left = hops.checked_sub(1).ok_or(UNUSABLE_FORWARDED)?;
    for field in fields.iter().rev() {
        let mut reader = Backwards::new(field.as_bytes());
        // Empty elements (a trailing comma, `a, , b`, an empty line) are no elements.
        while reader.skip_empty_element() {
            let node = reader.element().ok_or(UNUSABLE_FORWARDED)?;
            if left == 0 {
                let mut buffer = [0; MAX_NODE];
                let text = node
                    .ok_or(UNUSABLE_FORWARDED)?
                    .unescape(&mut buffer)
                    .ok_or(UNUSABLE_FORWARDED)?;
                let port = |port: &str| is_port(port) || is_obfuscated(port);
                if names_no_address(text, port) {
                    return Err(NoKey::Missing);
                }
                return address_and_port(text, port).ok_or(UNUSABLE_FORWARDED);
            }
            left -= 1;
            if !reader.separator().ok_or(UNUSABLE_FORWARDED)? {
                break;
            }
        }
    }
    Err(UNUSABLE_FORWARDED)
}

/// What a proxy writes for a client whose address it does not know or does not tell.
const UNKNOWN: &str = "unknown";

/// RFC 7239's `unknown` (case-insensitive, as ABNF strings are) or an obfuscated identifier,
/// then nothing, or `:` and a port that `port` accepts: a node that names no address. The
/// client is then unknown, as without the field, and not at fault: its proxy wrote this.
fn names_no_address(text: &str, port: impl Fn(&str) -> bool) -> bool {
    let (name, rest) = text
        .split_once(':')
        .map_or((text, None), |(n, p)| (n, Some(p)));
    (name.eq_ignore_ascii_case(UNKNOWN) || is_obfuscated(name)) && rest.is_none_or(port)
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

/// RFC 7239's `obfport` and `obfnode`: `_` then letters, digits, `.`, `_`, `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

fn is_ows(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_ows(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `qdtext`: what a quoted string holds unescaped.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// RFC 9110 `quoted-pair`'s second byte: HTAB, SP, VCHAR or obs-text.
fn is_escapable(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

/// The longest `for` value that can be an address: a bracketed IPv6 address with a port
/// (`[` 45 `]:` 5) is 53 bytes; anything longer is not an address.
const MAX_NODE: usize = 64;

/// A `for` value as written: a token, or a quoted string's content with its escapes.
#[derive(Clone, Copy)]
enum Node<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

impl Node<'_> {
    /// The value as text, escapes removed into `buffer`; `None` if it is too long to be an
    /// address or not UTF-8.
    fn unescape(self, buffer: &mut [u8; MAX_NODE]) -> Option<&str> {
        let len = match self {
            Node::Token(token) => {
                buffer.get_mut(..token.len())?.copy_from_slice(token);
                token.len()
            }
            Node::Quoted(content) => {
                let mut len = 0;
                let mut bytes = content.iter();
                while let Some(&b) = bytes.next() {
                    // The content was checked: every backslash is followed by its byte.
                    let b = if b == b'\\' { *bytes.next()? } else { b };
                    *buffer.get_mut(len)? = b;
                    len += 1;
                }
                len
            }
        };
        std::str::from_utf8(&buffer[..len]).ok()
    }
}

/// Reads one `Forwarded` field line from its end towards its start.
struct Backwards<'a> {
    bytes: &'a [u8],
    /// Everything at and after `end` has been read.
    end: usize,
}

impl<'a> Backwards<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut reader = Self {
            bytes,
            end: bytes.len(),
        };
        reader.skip_ows();
        reader
    }

    /// The byte just left of what has been read.
    fn peek(&self) -> Option<u8> {
        self.end.checked_sub(1).map(|i| self.bytes[i])
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.end -= 1;
        }
    }

    /// Skips the empty elements ending here (commas with nothing but spaces and tabs between
    /// them); whether an element is left to read on this line.
    fn skip_empty_element(&mut self) -> bool {
        while self.peek() == Some(b',') {
            self.end -= 1;
            self.skip_ows();
        }
        self.peek().is_some()
    }

    /// After an element: `true` at a comma (another element precedes it on this line),
    /// `false` at the start of the line, `None` at anything else.
    fn separator(&mut self) -> Option<bool> {
        self.skip_ows();
        match self.peek() {
            None => Some(false),
            Some(b',') => {
                self.end -= 1;
                self.skip_ows();
                Some(true)
            }
            Some(_) => None,
        }
    }

    /// The element ending here: its `for` value, if it has one; `None` if it is malformed
    /// or not preceded by a comma or the start of the line. Its pairs may be empty (RFC 7239:
    /// `for=192.0.2.1;`, `a=1;;b=2`), so an element of semicolons alone has no `for`.
    fn element(&mut self) -> Option<Option<Node<'a>>> {
        let mut found = None;
        loop {
            while self.peek() == Some(b';') {
                self.end -= 1;
                self.skip_ows();
            }
            if matches!(self.peek(), None | Some(b',')) {
                return Some(found);
            }
            let value = self.value()?;
            if self.peek() != Some(b'=') {
                return None;
            }
            self.end -= 1;
            let name = self.token()?;
            if name.eq_ignore_ascii_case(b"for") && found.replace(value).is_some() {
                return None;
            }
            let before = self.end;
            self.skip_ows();
            if self.peek() != Some(b';') {
                self.end = before;
                return matches!(self.before_ows(), None | Some(b',')).then_some(found);
            }
        }
    }

    /// The first byte left of the spaces and tabs before what has been read.
    fn before_ows(&self) -> Option<u8> {
        self.bytes[..self.end]
            .iter()
            .rev()
            .copied()
            .find(|&b| !is_ows(b))
    }

    fn value(&mut self) -> Option<Node<'a>> {
        if self.peek() == Some(b'"') {
            self.quoted()
        } else {
            self.token().map(Node::Token)
        }
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let end = self.end;
        while self.peek().is_some_and(is_tchar) {
            self.end -= 1;
        }
        (self.end < end).then(|| &self.bytes[self.end..end])
    }

    /// The quoted string ending here (at its closing quote). Its opening quote is the first
    /// quote to the left that is not escaped, that is, preceded by an even run of
    /// backslashes; a well-formed string's runs lie inside it. The content is then checked
    /// from the left: qdtext, or a backslash and the byte it escapes.
    fn quoted(&mut self) -> Option<Node<'a>> {
        let close = self.end - 1;
        let mut at = close;
        let open = loop {
            at = self.bytes[..at].iter().rposition(|&b| b == b'"')?;
            let backslashes = self.bytes[..at]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count();
            if backslashes % 2 == 0 {
                break at;
            }
        };
        let content = &self.bytes[open + 1..close];
        let mut bytes = content.iter();
        while let Some(&b) = bytes.next() {
            let valid = if b == b'\\' {
                bytes.next().is_some_and(|&escaped| is_escapable(escaped))
            } else {
                is_qdtext(b)
            };
            if !valid {
                return None;
            }
        }
        self.end = open;
        Some(Node::Quoted(content))
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

    fn ip(text: &str) -> Result<IpAddr, NoKey> {
        Ok(text.parse().unwrap())
    }

    fn unusable(result: Result<IpAddr, NoKey>) -> bool {
        matches!(result, Err(NoKey::Unusable { .. }))
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
        assert!(unusable(x_forwarded_for(&h, 4)));
        assert!(unusable(x_forwarded_for(&h, 5)));
        assert_eq!(x_forwarded_for(&HeaderMap::new(), 1), Err(NoKey::Missing));
    }

    #[test]
    fn x_forwarded_for_entries_may_carry_brackets_and_ports() {
        for (entry, expected) in [
            ("192.0.2.1", ip("192.0.2.1")),
            ("192.0.2.1:4711", ip("192.0.2.1")),
            ("2001:db8::1", ip("2001:db8::1")),
            ("[2001:db8::1]", ip("2001:db8::1")),
            ("[2001:db8::1]:443", ip("2001:db8::1")),
            ("[192.0.2.1]", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("192.0.2.1:", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("192.0.2.1:123456", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("192.0.2.1:+80", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("[2001:db8::1]x", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("unknown", Err(NoKey::Missing)),
            ("Unknown", Err(NoKey::Missing)),
            ("unknown:80", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("_hidden", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("", Err(UNUSABLE_X_FORWARDED_FOR)),
            ("01.2.3.4", Err(UNUSABLE_X_FORWARDED_FOR)),
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
        assert!(unusable(forwarded(&h, 1)), "no `for` in the last element");
        assert_eq!(forwarded(&h, 2), ip("192.0.2.60"));
        assert_eq!(forwarded(&h, 3), ip("2001:db8:cafe::17"));
        assert_eq!(forwarded(&h, 4), ip("6.6.6.6"));
        assert!(unusable(forwarded(&h, 5)));
        assert!(unusable(forwarded(&h, 0)));
        assert_eq!(forwarded(&HeaderMap::new(), 1), Err(NoKey::Missing));
    }

    #[test]
    fn forwarded_nodes_that_are_not_addresses_name_no_client_or_are_unusable() {
        for (value, expected) in [
            (r#"for="192.0.2.1:8080""#, ip("192.0.2.1")),
            (r#"for="192.0.2.1:_p1""#, ip("192.0.2.1")),
            (r#"for="[::1]""#, ip("::1")),
            (r#"for="\[::1\]""#, ip("::1")),
            (r#"for="\"192.0.2.1""#, Err(UNUSABLE_FORWARDED)),
            (r#"for=" 192.0.2.1""#, Err(UNUSABLE_FORWARDED)),
            ("for=unknown", Err(NoKey::Missing)),
            ("for=UnKnown", Err(NoKey::Missing)),
            (r#"for="unknown:4711""#, Err(NoKey::Missing)),
            ("for=_hidden", Err(NoKey::Missing)),
            (r#"for="_hidden:_p1""#, Err(NoKey::Missing)),
            ("for=unknownx", Err(UNUSABLE_FORWARDED)),
            ("for=_", Err(UNUSABLE_FORWARDED)),
            (r#"for="_hidden:""#, Err(UNUSABLE_FORWARDED)),
            (r#"for="unknown:x""#, Err(UNUSABLE_FORWARDED)),
            (r#"for="_a/b""#, Err(UNUSABLE_FORWARDED)),
            (r#"for="2001:db8::1""#, Err(UNUSABLE_FORWARDED)),
            (r#"for="[2001:db8::1]x""#, Err(UNUSABLE_FORWARDED)),
            (r#"for="192.0.2.1:""#, Err(UNUSABLE_FORWARDED)),
            // Too long to be an address: never copied past the fixed buffer.
            (
                &format!("for=\"[::1]:_{}\"", "a".repeat(100)),
                Err(UNUSABLE_FORWARDED),
            ),
        ] {
            assert_eq!(
                forwarded(&headers("forwarded", &[value]), 1),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn a_malformed_chosen_element_is_unusable() {
        for value in [
            "for=192.0.2.1, garbage",
            "for=[::1]",
            "for=192.0.2.1;for=192.0.2.2",
            r#"for="192.0.2.1"#,
            r#"for=192.0.2.1""#,
            r#"for="192.0.2.1\""#,
            "for =192.0.2.1",
            "for= 192.0.2.1",
            "for=",
            "",
            " , ,",
            ";",
            "x for=192.0.2.1",
            "x;;for=192.0.2.1",
        ] {
            assert!(
                unusable(forwarded(&headers("forwarded", &[value]), 1)),
                "{value:?}"
            );
        }
        // A comma inside a quoted string is not a separator.
        let quoted = headers("forwarded", &[r#"for=192.0.2.9;x="a, b", for=192.0.2.1"#]);
        assert_eq!(forwarded(&quoted, 2), ip("192.0.2.9"));
    }

    /// RFC 9110 §5.6.1: a list's empty elements are no elements, and recipients accept them;
    /// RFC 7239 §4: an element's pairs may be empty (`for=192.0.2.1;`). Proxies that write
    /// either must not have every request they forward refused.
    #[test]
    fn empty_list_elements_and_empty_pairs_are_accepted_and_not_counted() {
        for (values, hops, expected) in [
            (&["for=192.0.2.1,"][..], 1, ip("192.0.2.1")),
            (&["for=192.0.2.1 , ,\t"], 1, ip("192.0.2.1")),
            (&["for=192.0.2.1;"], 1, ip("192.0.2.1")),
            (&[";for=192.0.2.1"], 1, ip("192.0.2.1")),
            (&["proto=https;;for=192.0.2.1; ;by=_x"], 1, ip("192.0.2.1")),
            (&["for=192.0.2.2, , for=192.0.2.1"], 2, ip("192.0.2.2")),
            (&["for=192.0.2.2", ",", "for=192.0.2.1"], 2, ip("192.0.2.2")),
            (&["for=192.0.2.2", "", "for=192.0.2.1"], 2, ip("192.0.2.2")),
            (&[",for=192.0.2.2,", "for=192.0.2.1"], 2, ip("192.0.2.2")),
            // An element of empty pairs is an element, with no `for`.
            (
                &["for=192.0.2.2, ;, for=192.0.2.1"],
                2,
                Err(UNUSABLE_FORWARDED),
            ),
        ] {
            assert_eq!(
                forwarded(&headers("forwarded", values), hops),
                expected,
                "{values:?} at {hops}"
            );
        }
    }

    #[test]
    fn what_the_client_wrote_left_of_the_chosen_element_is_never_read() {
        let proxies = r#"for=192.0.2.1;proto=https, For="[2001:db8::5]:80";by=_x"#;
        for prefix in [
            "",
            "x",
            r#"for=""#,
            r#"for="\"#,
            r#"a="\\"#,
            r#"\""#,
            ";",
            ",",
            "for=6.6.6.6",
            "\t",
        ] {
            let same_line = headers("forwarded", &[&format!("{prefix},{proxies}")]);
            let own_line = headers("forwarded", &[prefix, proxies]);
            for h in [same_line, own_line] {
                assert_eq!(forwarded(&h, 1), ip("2001:db8::5"), "{prefix:?}");
                assert_eq!(forwarded(&h, 2), ip("192.0.2.1"), "{prefix:?}");
            }
        }
    }
}
