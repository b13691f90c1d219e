//! W3C Baggage: application key/value pairs that travel with a request.
//!
//! Rules followed (W3C Baggage, "Header Content"):
//! - `list-member = key OWS "=" OWS value *( OWS ";" OWS property )`,
//!   `property = key OWS "=" OWS value / key OWS`;
//! - a key is an RFC 7230 token; a value is percent-decoded to UTF-8 (invalid UTF-8 becomes
//!   U+FFFD, as the spec says) and re-encoded when written;
//! - at most [`Baggage::MAX_MEMBERS`] members and [`Baggage::MAX_BYTES`] bytes: a member
//!   that would take the baggage past either limit is dropped whole (a later, smaller one may
//!   still fit);
//! - repeated headers are combined in order; empty members are tolerated;
//! - a member that breaks the grammar makes the whole header invalid (nothing half-read);
//! - a repeated key keeps its first position and its last value; when that value does not
//!   fit in the limits, the key is dropped rather than kept at an earlier value.

use std::fmt;

use crate::Error;
use crate::carrier::{FieldValue, trim_ows};
use crate::fields::{Fields, split_once};
use crate::id::any_hex_value;

/// One baggage member: key, decoded value and its properties (metadata).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BaggageEntry {
    /// The member as written, but with its value decoded: the key, `=`, the decoded value
    /// and, if there are any, `;` and the canonical properties (`;`-separated `key` or
    /// `key=value`). One allocation per member, where a `String` each took two or three
    /// (`trace_ctx/baggage_extract`); and a member whose value needs no escape is its own
    /// wire form, written in one copy (`trace_ctx/baggage_inject`).
    text: String,
    /// Where the key ends: the `=` before the value.
    key_end: usize,
    /// Where the value ends: the end, or the `;` before the properties.
    value_end: usize,
    /// The length [`write_entry`] writes, counted once, when the entry is made.
    encoded_len: usize,
}

impl BaggageEntry {
    /// An entry of these parts, in one allocation of their total length.
    fn new(key: &str, value: &str, properties: &str) -> Self {
        let separator = usize::from(!properties.is_empty());
        let mut text =
            String::with_capacity(key.len() + 1 + value.len() + separator + properties.len());
        text.push_str(key);
        text.push('=');
        text.push_str(value);
        let value_end = text.len();
        if !properties.is_empty() {
            text.push(';');
            text.push_str(properties);
        }
        Self {
            encoded_len: encoded_len(key.len(), percent_encoded_len(value), properties.len()),
            text,
            key_end: key.len(),
            value_end,
        }
    }

    /// The member's key.
    pub fn key(&self) -> &str {
        &self.text[..self.key_end]
    }

    /// The member's value, percent-decoded.
    pub fn value(&self) -> &str {
        &self.text[self.key_end + 1..self.value_end]
    }

    /// Whether `other` has the same key. Keys are never empty, and most differ in length or
    /// first byte: checking those first skips a call to compare the bytes (the comparisons
    /// of each new member with those before it were a tenth of `trace_ctx/baggage_extract`).
    fn has_key_of(&self, other: &Self) -> bool {
        self.key_end == other.key_end
            && self.text.as_bytes().first() == other.text.as_bytes().first()
            && self.key() == other.key()
    }

    /// The canonical properties.
    fn canonical_properties(&self) -> &str {
        self.text.get(self.value_end + 1..).unwrap_or_default()
    }

    /// The member's properties in order, as `(key, value)`; a bare property has no value.
    pub fn properties(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.canonical_properties()
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            })
    }

    /// The length [`write_entry`] writes.
    const fn encoded_len(&self) -> usize {
        self.encoded_len
    }
}

/// The length [`write_entry`] writes for a member of these lengths (the value's as encoded).
const fn encoded_len(key: usize, encoded_value: usize, properties: usize) -> usize {
    let separator = if properties == 0 { 0 } else { 1 };
    key + 1 + encoded_value + separator + properties
}

impl fmt::Debug for BaggageEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaggageEntry")
            .field("key", &self.key())
            .field("value", &self.value())
            .field("properties", &self.canonical_properties())
            .finish()
    }
}

/// The baggage of a request: an ordered set of members with unique keys.
///
/// Empty by default without heap memory. Its encoded form always respects the W3C limits,
/// so whatever this crate holds it can propagate.
///
/// ```
/// use infra_trace_ctx::Baggage;
///
/// let mut baggage = Baggage::parse("userId=alice, cart=3%20items;ttl=60")?;
/// assert_eq!(baggage.get("cart"), Some("3 items"));
/// baggage.insert("region", "eu west")?;
/// assert_eq!(baggage.to_string(), "userId=alice,cart=3%20items;ttl=60,region=eu%20west");
/// # Ok::<(), infra_trace_ctx::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Baggage {
    entries: Vec<BaggageEntry>,
}

impl Baggage {
    /// The most members baggage may have.
    pub const MAX_MEMBERS: usize = 64;
    /// The longest encoded header.
    pub const MAX_BYTES: usize = 8192;

    /// Empty baggage.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Parses one `baggage` header value.
    ///
    /// # Errors
    ///
    /// [`Error::Baggage`] if any member breaks the grammar.
    pub fn parse(header: &str) -> Result<Self, Error> {
        Self::parse_all([header])
    }

    /// Parses repeated `baggage` fields, combined in order.
    ///
    /// # Errors
    ///
    /// [`Error::Baggage`] if any member breaks the grammar.
    pub fn parse_all<'a>(headers: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut baggage = Self::new();
        for header in headers {
            baggage.merge_header(header.as_bytes())?;
        }
        Ok(baggage)
    }

    /// Parses `header` and adds its members; on error `self` is unchanged.
    ///
    /// The header is read as bytes: every byte the grammar allows is ASCII, so a header that
    /// is not UTF-8 fails on its first byte outside the grammar, with no separate check.
    pub(crate) fn merge_header(&mut self, header: &[u8]) -> Result<(), Error> {
        if self.is_empty() {
            // Nothing to keep unchanged (the usual case: a fresh context): parse in place.
            let merged = self.merge_members(header);
            if merged.is_err() {
                self.entries.clear();
            }
            return merged;
        }
        let mut merged = self.clone();
        merged.merge_members(header)?;
        *self = merged;
        Ok(())
    }

    /// Parses `header` and adds its members as they are read, so memory stays within the
    /// limits (64 members, 8192 bytes) however long the header: members past them are still
    /// parsed, since a malformed one invalidates the header and a repeated key updates an
    /// earlier value, but not kept. On error some members may have been added.
    fn merge_members(&mut self, header: &[u8]) -> Result<(), Error> {
        // The encoded length is carried along rather than recounted per member, which made
        // a header's extraction quadratic in its members.
        let mut encoded_len = self.encoded_len();
        for member in Fields::new(header, b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            // A member that would take the baggage past a limit is dropped whole, as the spec
            // allows; a later, smaller one may still fit.
            encoded_len = match self.insert_entry_at(parse_member(member)?, encoded_len) {
                Ok(len) => len,
                // The header replaced this key's value with one that does not fit: the
                // earlier value is no longer the sender's, so the key goes with it.
                Err((_, Some(stale))) => {
                    let separator = usize::from(self.len() > 1);
                    encoded_len - self.entries.remove(stale).encoded_len() - separator
                }
                Err((_, None)) => encoded_len,
            };
        }
        Ok(())
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(BaggageEntry::value)
    }

    /// The member with `key`.
    pub fn entry(&self, key: &str) -> Option<&BaggageEntry> {
        self.entries.iter().find(|entry| entry.key() == key)
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageEntry> + '_ {
        self.entries.iter()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key` to `value` (any UTF-8; it is percent-encoded on the wire).
    ///
    /// # Errors
    ///
    /// [`Error::Baggage`] if the key is not a token, [`Error::LimitExceeded`] if the member
    /// would exceed 64 members or 8192 bytes; the baggage is unchanged.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), Error> {
        validate_token(key.as_bytes())?;
        self.insert_entry(BaggageEntry::new(key, value, ""))
    }

    /// Sets `key` to `value` with properties, each `(key, value)` or `(key, None)`.
    ///
    /// # Errors
    ///
    /// As [`Baggage::insert`]; also [`Error::Baggage`] if a property key is not a token or a
    /// property value holds characters outside the baggage-octet range.
    pub fn insert_with_properties(
        &mut self,
        key: &str,
        value: &str,
        properties: &[(&str, Option<&str>)],
    ) -> Result<(), Error> {
        validate_token(key.as_bytes())?;
        let mut canonical = String::new();
        for (name, value) in properties {
            validate_token(name.as_bytes())?;
            if !canonical.is_empty() {
                canonical.push(';');
            }
            canonical.push_str(name);
            if let Some(value) = value {
                validate_octets(value.as_bytes())?;
                canonical.push('=');
                canonical.push_str(value);
            }
        }
        self.insert_entry(BaggageEntry::new(key, value, &canonical))
    }

    /// Removes `key`, returning its entry.
    pub fn remove(&mut self, key: &str) -> Option<BaggageEntry> {
        let index = self.entries.iter().position(|entry| entry.key() == key)?;
        Some(self.entries.remove(index))
    }

    fn insert_entry(&mut self, entry: BaggageEntry) -> Result<(), Error> {
        self.insert_entry_at(entry, self.encoded_len())
            .map(drop)
            .map_err(|(error, _)| error)
    }

    /// [`insert_entry`](Self::insert_entry) given the current `encoded_len()`; returns the
    /// new one. On error, the baggage is unchanged, and the error comes with the index of the
    /// member of the same key, if there is one.
    // Inlined: passed to a call, the entry was first copied, reading back 16 bytes at a time
    // the fields just written one by one (a store-forwarding stall, `trace_ctx/baggage_extract`).
    #[inline(always)]
    fn insert_entry_at(
        &mut self,
        entry: BaggageEntry,
        encoded_len: usize,
    ) -> Result<usize, (Error, Option<usize>)> {
        let replaced = self.entries.iter().position(|e| e.has_key_of(&entry));
        let without = encoded_len
            - replaced.map_or(0, |i| {
                self.entries[i].encoded_len() + usize::from(self.len() > 1)
            });
        let remaining = self.len() - usize::from(replaced.is_some());
        let with = without + entry.encoded_len() + usize::from(remaining > 0);
        if remaining >= Self::MAX_MEMBERS {
            return Err((
                Error::LimitExceeded("baggage holds at most 64 members"),
                replaced,
            ));
        }
        if with > Self::MAX_BYTES {
            return Err((
                Error::LimitExceeded("baggage is at most 8192 bytes"),
                replaced,
            ));
        }
        match replaced {
            Some(index) => self.entries[index] = entry,
            None => self.entries.push(entry),
        }
        Ok(with)
    }

    fn encoded_len(&self) -> usize {
        let members: usize = self.entries.iter().map(BaggageEntry::encoded_len).sum();
        members + self.entries.len().saturating_sub(1)
    }
}

impl fmt::Display for Baggage {
    /// The canonical header value: members joined by `,`, values percent-encoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_members(f)
    }
}

impl Baggage {
    /// The header value, written straight into a `String` of its exact length: no
    /// reallocation, and no formatter between the bytes and the buffer.
    fn encode(&self) -> String {
        let mut header = String::with_capacity(self.encoded_len());
        // Writing into a String cannot fail.
        let _ = self.write_members(&mut header);
        header
    }

    fn write_members(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write_entry(out, entry)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (e.key(), e.value())))
            .finish()
    }
}

impl std::str::FromStr for Baggage {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

fn write_entry(out: &mut impl fmt::Write, entry: &BaggageEntry) -> fmt::Result {
    // The text differs from the wire form only in the value's escapes; with none, the encoded
    // length is the text's, and the text is written in one piece.
    if entry.encoded_len == entry.text.len() {
        return out.write_str(&entry.text);
    }
    out.write_str(&entry.text[..=entry.key_end])?;
    write_percent_encoded::<false>(out, entry.value())?;
    out.write_str(&entry.text[entry.value_end..])
}

/// Writes `value` with every byte outside the baggage-octet range, `%` and `=`
/// percent-encoded, and `+` too with `ESCAPE_PLUS` (for readers that take a plain `+` for a
/// space, as Jaeger's Go clients do; a constant, so that baggage's own writing tests nothing
/// more per byte). `=` is a baggage octet, but readers that split a member
/// at every `=` (OpenTelemetry's Rust propagator) would cut the value short; W3C Baggage lets
/// a writer encode any octet, and every conforming reader decodes it.
pub(crate) fn write_percent_encoded<const ESCAPE_PLUS: bool>(
    out: &mut impl fmt::Write,
    value: &str,
) -> fmt::Result {
    let bytes = value.as_bytes();
    let mut plain_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if !is_escaped_with(byte, ESCAPE_PLUS) {
            continue;
        }
        // A plain run holds only baggage octets, which are ASCII, so a non-empty one starts
        // and ends between characters (an empty one may sit inside an escaped character).
        if plain_start < i {
            out.write_str(&value[plain_start..i])?;
        }
        // One write of the escape's three characters, where one per character each
        // checked the buffer's room.
        let escape = 3 * usize::from(byte);
        out.write_str(&ESCAPES[escape..escape + 3])?;
        plain_start = i + 1;
    }
    // `plain_start` is the end or an ASCII byte after an escape: a character boundary.
    out.write_str(&value[plain_start..])
}

/// `%00%01…%FF`: the escape of byte `b` at `3 * b`.
const ESCAPES: &str = {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    const BYTES: [u8; 768] = {
        let mut escapes = [0u8; 768];
        let mut byte = 0;
        while byte < 256 {
            escapes[3 * byte] = b'%';
            escapes[3 * byte + 1] = UPPER_HEX[byte >> 4];
            escapes[3 * byte + 2] = UPPER_HEX[byte & 0x0f];
            byte += 1;
        }
        escapes
    };
    match std::str::from_utf8(&BYTES) {
        Ok(escapes) => escapes,
        Err(_) => panic!("escapes are ASCII"),
    }
};

/// Whether [`write_percent_encoded`] escapes `byte`, given its `ESCAPE_PLUS`.
fn is_escaped_with(byte: u8, escape_plus: bool) -> bool {
    is_escaped(byte) || (escape_plus && byte == b'+')
}

/// The length [`write_percent_encoded`] writes for `value` without `ESCAPE_PLUS`: each
/// escaped byte takes three.
fn percent_encoded_len(value: &str) -> usize {
    percent_encoded_len_with(value, false)
}

/// The length [`write_percent_encoded`] writes for `value`, `+` escaped with `escape_plus`.
pub(crate) fn percent_encoded_len_with(value: &str, escape_plus: bool) -> usize {
    let escaped = value
        .bytes()
        .filter(|&byte| is_escaped_with(byte, escape_plus))
        .count();
    value.len() + 2 * escaped
}

/// The byte a `%XX` escape stands for, given the bytes after its `%`; `None` unless two hex
/// digits follow.
fn escaped_byte(after_percent: &[u8]) -> Option<u8> {
    let high = any_hex_value(*after_percent.first()?)?;
    let low = any_hex_value(*after_percent.get(1)?)?;
    Some((high << 4) | low)
}

/// Whether [`write_percent_encoded`] writes `byte` as a `%XX` escape.
fn is_escaped(byte: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & ESCAPED != 0
}

/// Percent-decodes `raw`; malformed escapes are an error, invalid UTF-8 becomes U+FFFD.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let mut decoded = Vec::with_capacity(raw.len());
    if !percent_decode_into(raw.as_bytes(), &mut decoded) {
        return None;
    }
    // Valid UTF-8, the usual case, becomes the `String` without a second copy.
    Some(
        String::from_utf8(decoded)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Percent-decodes `raw` into UTF-8: `None` for a malformed escape or for escapes that decode
/// to bytes which are not UTF-8 (where [`percent_decode`] would write U+FFFD). For the OTLP
/// exporter's environment variables.
#[cfg(feature = "otlp")]
pub(crate) fn percent_decode_utf8(raw: &str) -> Option<String> {
    let mut decoded = Vec::with_capacity(raw.len());
    if !percent_decode_into(raw.as_bytes(), &mut decoded) {
        return None;
    }
    String::from_utf8(decoded).ok()
}

/// Appends the member value `raw` percent-decoded to `out`, checking its bytes on the way
/// (one pass for the check, the decoding and the count), and returns the length
/// [`write_percent_encoded`] writes for the decoded value.
///
/// # Errors
///
/// [`Error::Baggage`] for a byte outside the baggage octets or a malformed escape (`out` is
/// then partly written).
fn decode_value_into(raw: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
    let mut encoded = 0;
    let mut rest = raw;
    loop {
        // Runs of bytes written as they stand are copied whole: most values are one run.
        let run = rest
            .iter()
            .position(|&byte| !is_verbatim(byte))
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        encoded += run;
        let Some((&first, after)) = rest[run..].split_first() else {
            return Ok(encoded);
        };
        let byte = if first == b'%' {
            let byte = escaped_byte(after).ok_or(Error::Baggage("a malformed percent escape"))?;
            rest = &after[2..];
            byte
        } else if is_baggage_octet(first) {
            rest = after;
            first
        } else {
            return Err(Error::Baggage(
                "a value holds only baggage octets (others are percent-encoded)",
            ));
        };
        out.push(byte);
        encoded += if is_escaped(byte) { 3 } else { 1 };
    }
}

/// Appends `raw` percent-decoded to `out`; false (and `out` partly written) on a malformed
/// escape.
fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|&byte| byte == b'%') {
        out.extend_from_slice(&rest[..at]);
        let Some(byte) = escaped_byte(&rest[at + 1..]) else {
            return false;
        };
        out.push(byte);
        rest = &rest[at + 3..];
    }
    out.extend_from_slice(rest);
    true
}

fn parse_member(member: &[u8]) -> Result<BaggageEntry, Error> {
    let mut parts = Fields::new(member, b';');
    let pair = parts.next().unwrap_or_default();
    let (key, value) = split_once(pair, b'=').ok_or(Error::Baggage("a member is key=value"))?;
    let key = trim_ows(key);
    let value = trim_ows(value);
    validate_token(key)?;
    // Key, value and properties go straight into the entry's one buffer; bytes, because a
    // decoded value may not be UTF-8 (the key and the properties are ASCII by the grammar).
    // Decoding never lengthens the value, so the member's length is enough.
    let mut text = Vec::with_capacity(member.len());
    text.extend_from_slice(key);
    text.push(b'=');
    let encoded_value = decode_value_into(value, &mut text)?;
    let value_end = text.len();
    for property in parts {
        let property = trim_ows(property);
        let (name, value) = match split_once(property, b'=') {
            Some((name, value)) => (trim_ows(name), Some(trim_ows(value))),
            None => (property, None),
        };
        validate_token(name)?;
        text.push(b';');
        text.extend_from_slice(name);
        if let Some(value) = value {
            validate_octets(value)?;
            text.push(b'=');
            text.extend_from_slice(value);
        }
    }
    // The parts are settled first and the entry built once: an entry built on each of two
    // paths went through a stack temporary, copied 16 bytes at a time from fields written one
    // by one (a store-forwarding stall, `trace_ctx/baggage_extract`).
    let (text, value_end, encoded_value) = match String::from_utf8(text) {
        Ok(text) => (text, value_end, encoded_value),
        Err(invalid) => replace_invalid_value(invalid.as_bytes(), key.len(), value_end),
    };
    Ok(BaggageEntry {
        encoded_len: encoded_len(
            key.len(),
            encoded_value,
            text.len().saturating_sub(value_end + 1),
        ),
        text,
        key_end: key.len(),
        value_end,
    })
}

/// The parts of a member whose decoded value (`bytes[key_end + 1..value_end]`) is not UTF-8:
/// the text with the value's invalid sequences replaced by U+FFFD (the key and the
/// properties are ASCII by the grammar), the value's new end and its encoded length.
#[cold]
fn replace_invalid_value(bytes: &[u8], key_end: usize, value_end: usize) -> (String, usize, usize) {
    let value = String::from_utf8_lossy(&bytes[key_end + 1..value_end]);
    let mut text = String::with_capacity(bytes.len() + value.len());
    text.push_str(&String::from_utf8_lossy(&bytes[..=key_end]));
    text.push_str(&value);
    let new_value_end = text.len();
    text.push_str(&String::from_utf8_lossy(&bytes[value_end..]));
    (text, new_value_end, percent_encoded_len(&value))
}

/// [`BYTE_CLASS`] flag: an RFC 7230 `tchar`.
const TCHAR: u8 = 1;
/// [`BYTE_CLASS`] flag: a `baggage-octet`.
const OCTET: u8 = 2;
/// [`BYTE_CLASS`] flag: written as a `%XX` escape.
const ESCAPED: u8 = 4;

/// The classes of every byte, looked up once per byte: the membership tests as ranges and
/// alternatives cost about ten instructions a byte in the parser's loops.
const BYTE_CLASS: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        #[allow(clippy::cast_possible_truncation)] // below 256
        let b = byte as u8;
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        // `baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
        let octet = matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e);
        let escaped = !octet || b == b'%' || b == b'=';
        classes[byte] = if tchar { TCHAR } else { 0 }
            | if octet { OCTET } else { 0 }
            | if escaped { ESCAPED } else { 0 };
        byte += 1;
    }
    classes
};

/// An RFC 7230 `tchar`.
pub(crate) fn is_tchar(byte: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & TCHAR != 0
}

fn validate_token(key: &[u8]) -> Result<(), Error> {
    if !key.is_empty() && key.iter().all(|&byte| is_tchar(byte)) {
        Ok(())
    } else {
        Err(Error::Baggage("a key is a non-empty HTTP token"))
    }
}

/// A `baggage-octet`.
fn is_baggage_octet(byte: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & OCTET != 0
}

/// A `baggage-octet` written as it stands, not as a `%XX` escape.
fn is_verbatim(byte: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & (OCTET | ESCAPED) == OCTET
}

fn validate_octets(value: &[u8]) -> Result<(), Error> {
    if value.iter().all(|&byte| is_baggage_octet(byte)) {
        Ok(())
    } else {
        Err(Error::Baggage(
            "a value holds only baggage octets (others are percent-encoded)",
        ))
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// (headers as received, expected canonical value, or None if the header is invalid).
    const VECTORS: &[(&[&str], Option<&str>)] = &[
        (
            &["key1=value1,key2=value2"],
            Some("key1=value1,key2=value2"),
        ),
        (
            &["key1 = value1 , key2\t=\tvalue2"],
            Some("key1=value1,key2=value2"),
        ),
        (
            &["key1=value1", "key2=value2"],
            Some("key1=value1,key2=value2"),
        ),
        (
            &["key1=value1;property1;property2"],
            Some("key1=value1;property1;property2"),
        ),
        (&["key1=value1 ; p1 = v1 ;p2"], Some("key1=value1;p1=v1;p2")),
        (&["key1=", "key2=x"], Some("key1=,key2=x")),
        // `=` is a baggage octet: read plainly, but written escaped (see
        // `write_percent_encoded`).
        (
            &["k=%20spaced%2C%3Dvalue%25"],
            Some("k=%20spaced%2C%3Dvalue%25"),
        ),
        (&["k=a=b"], Some("k=a%3Db")),
        (&["k=%e2%9c%93"], Some("k=%E2%9C%93")),
        (&["k=a,,b=c, "], Some("k=a,b=c")),
        (&["k=1,k=2"], Some("k=2")),
        (&[""], Some("")),
        (&["k"], None),
        (&["=v"], None),
        (&["k k=v"], None),
        (&["k=a b"], None),
        (&["k=a\"b"], None),
        (&["k=%zz"], None),
        (&["k=%2"], None),
        (&["k=v;=p"], None),
        (&["ok=1", "bad"], None),
    ];

    #[test]
    fn spec_vectors() {
        for (headers, expected) in VECTORS {
            let parsed = Baggage::parse_all(headers.iter().copied());
            match expected {
                Some(canonical) => {
                    let baggage = parsed.unwrap_or_else(|e| panic!("{headers:?} rejected: {e}"));
                    assert_eq!(baggage.to_string(), *canonical, "{headers:?}");
                    // The length counted when parsing is the length written.
                    for entry in baggage.iter() {
                        let mut written = String::new();
                        write_entry(&mut written, entry).unwrap();
                        assert_eq!(entry.encoded_len(), written.len(), "{headers:?}");
                    }
                }
                None => assert!(parsed.is_err(), "{headers:?} accepted: {parsed:?}"),
            }
        }
    }

    #[test]
    fn byte_classes_follow_the_grammars() {
        for byte in 0..=u8::MAX {
            // RFC 7230: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
            // "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA.
            let tchar = byte.is_ascii_digit()
                || byte.is_ascii_alphabetic()
                || b"!#$%&'*+-.^_`|~".contains(&byte);
            assert_eq!(is_tchar(byte), tchar, "{byte:#04x}");
            // W3C Baggage: printable US-ASCII but DQUOTE, comma, semicolon and backslash.
            let octet = (0x21..=0x7e).contains(&byte) && !b"\",;\\".contains(&byte);
            assert_eq!(is_baggage_octet(byte), octet, "{byte:#04x}");
            assert_eq!(is_escaped(byte), !octet || byte == b'%' || byte == b'=');
        }
    }

    #[test]
    fn values_are_percent_decoded() {
        let baggage = Baggage::parse("k=%E2%9C%93%20ok,bad=%FF").unwrap();
        assert_eq!(baggage.get("k"), Some("✓ ok"));
        assert_eq!(baggage.get("bad"), Some("\u{fffd}"));
        let props: Vec<_> = Baggage::parse("k=v;a;b=c")
            .unwrap()
            .entry("k")
            .unwrap()
            .properties()
            .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
            .collect();
        assert_eq!(props, [("a".into(), None), ("b".into(), Some("c".into()))]);
        // A value that is not UTF-8 keeps the properties after it.
        let baggage = Baggage::parse("bad=x%FFy;p=1;q").unwrap();
        let entry = baggage.entry("bad").unwrap();
        assert_eq!(entry.value(), "x\u{fffd}y");
        let props: Vec<_> = entry.properties().collect();
        assert_eq!(props, [("p", Some("1")), ("q", None)]);
        assert_eq!(baggage.to_string(), "bad=x%EF%BF%BDy;p=1;q");
    }

    #[test]
    fn limits_drop_whole_members() {
        let header = (0..70)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let baggage = Baggage::parse(&header).unwrap();
        assert_eq!(baggage.len(), 64);
        assert_eq!(baggage.get("k63"), Some("v"));
        assert_eq!(baggage.get("k64"), None);

        let big = "x".repeat(3000);
        let header = format!("a={big},b={big},c={big}");
        let baggage = Baggage::parse(&header).unwrap();
        assert_eq!(baggage.len(), 2);
        assert!(baggage.to_string().len() <= Baggage::MAX_BYTES);
        // Not only from the end: a member too large to fit is dropped, and a later one that
        // fits is kept.
        let header = format!("a={big},b={},c=1", "y".repeat(6000));
        let baggage = Baggage::parse(&header).unwrap();
        let keys: Vec<&str> = baggage.iter().map(BaggageEntry::key).collect();
        assert_eq!(keys, ["a", "c"]);
        // A repeated key replaces its member, freeing the room it held; `c` then fills the
        // header to 8189 bytes, and `d` (4 more with its comma) no longer fits.
        let huge = "x".repeat(5000);
        let tail = "x".repeat(3180);
        let header = format!("a={huge},a=v,b={huge},c={tail},d=vv");
        let baggage = Baggage::parse(&header).unwrap();
        let keys: Vec<&str> = baggage.iter().map(BaggageEntry::key).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(baggage.get("a"), Some("v"));
        assert_eq!(baggage.to_string().len(), 8189);

        let mut full = Baggage::new();
        for i in 0..64 {
            full.insert(&format!("k{i}"), "v").unwrap();
        }
        assert!(matches!(
            full.insert("one-more", "v"),
            Err(Error::LimitExceeded(_))
        ));
        full.insert("k0", "replaced").unwrap();
        assert_eq!(full.get("k0"), Some("replaced"));
    }

    /// A repeated key's last value is the sender's: when it does not fit in the limits, the
    /// key goes rather than travel on with a value the header replaced.
    #[test]
    fn a_repeated_key_whose_last_value_does_not_fit_is_dropped_not_left_at_an_earlier_value() {
        let fill = "x".repeat(8100);
        let last = "z".repeat(200);
        for header in [
            format!("k=1,f={fill},k={last}"),
            format!("f={fill},k=1,k={last}"),
        ] {
            let baggage = Baggage::parse(&header).unwrap();
            assert_eq!(baggage.get("k"), None, "{header:.20}");
            assert_eq!(baggage.get("f"), Some(fill.as_str()));
            assert_eq!(baggage.encoded_len(), baggage.to_string().len());
        }
        // Across repeated fields too, and a later member still fits in the room freed.
        let baggage =
            Baggage::parse_all(["k=1", &format!("f={fill}"), &format!("k={last},g=2")]).unwrap();
        let keys: Vec<&str> = baggage.iter().map(BaggageEntry::key).collect();
        assert_eq!(keys, ["f", "g"]);
        assert_eq!(baggage.encoded_len(), baggage.to_string().len());
    }

    /// The byte limit applies to the header as written, where each `=` in a value takes three
    /// bytes (`%3D`): a received header within 8192 bytes whose values hold `=` can exceed
    /// it once written, and then loses members.
    #[test]
    fn the_byte_limit_counts_the_header_as_written_with_equals_signs_escaped() {
        let value = "a=".repeat(2000);
        let header = format!("k={value},z={}", "b".repeat(8192 - 5 - value.len()));
        assert_eq!(header.len(), Baggage::MAX_BYTES);
        let baggage = Baggage::parse(&header).unwrap();
        let keys: Vec<&str> = baggage.iter().map(BaggageEntry::key).collect();
        assert_eq!(keys, ["k"]);
        // `k=` and 2000 times `a%3D`: `z` no longer fits beside it.
        assert_eq!(baggage.to_string().len(), 2 + 4 * 2000);
    }

    /// A header whose last member is malformed leaves the baggage as it was, both when it
    /// was empty (parsed in place) and when it held members (parsed into a copy); a byte
    /// that is not UTF-8 is malformed like any byte outside the grammar.
    #[test]
    fn a_header_invalid_after_valid_members_leaves_the_baggage_unchanged() {
        for invalid in [&b"a=1, b=2, c d"[..], b"a=1,b=\xff", b"a=1;p=\xc3\xa9"] {
            let mut empty = Baggage::new();
            assert!(empty.merge_header(invalid).is_err());
            assert!(empty.is_empty());
            assert_eq!(empty.encoded_len(), 0);
            let mut held = Baggage::parse("k=v;p").unwrap();
            assert!(held.merge_header(invalid).is_err());
            assert_eq!(held.to_string(), "k=v;p");
        }
    }

    #[test]
    fn insert_validates_keys() {
        let mut baggage = Baggage::new();
        assert!(baggage.insert("bad key", "v").is_err());
        assert!(
            baggage
                .insert_with_properties("k", "v", &[("p", Some("a b"))])
                .is_err()
        );
        baggage
            .insert_with_properties("k", "v w", &[("p", Some("1")), ("flag", None)])
            .unwrap();
        assert_eq!(baggage.to_string(), "k=v%20w;p=1;flag");
        assert!(baggage.remove("k").is_some());
        assert!(baggage.is_empty());
    }

    proptest! {
        /// The one-pass decoder against the bytes the value was generated from (decoded
        /// whole, then invalid UTF-8 replaced), with the counted length checked by writing.
        #[test]
        fn a_parsed_value_is_decoded_and_counted_as_written(
            pieces in proptest::collection::vec((0u8..3, any::<u8>()), 0..12)
        ) {
            const PLAIN: &[u8] = b"aZ09!#$&'*+./:<>?@^_`|~=-";
            let (mut raw, mut bytes) = (String::new(), Vec::new());
            for &(kind, byte) in &pieces {
                match kind {
                    0 => {
                        let plain = PLAIN[usize::from(byte) % PLAIN.len()];
                        raw.push(char::from(plain));
                        bytes.push(plain);
                    }
                    1 => {
                        raw.push_str(&format!("%{byte:02X}"));
                        bytes.push(byte);
                    }
                    _ => {
                        raw.push_str(&format!("%{byte:02x}"));
                        bytes.push(byte);
                    }
                }
            }
            let baggage = Baggage::parse(&format!("k={raw};p")).unwrap();
            let entry = baggage.entry("k").unwrap();
            prop_assert_eq!(entry.value(), String::from_utf8_lossy(&bytes));
            let mut written = String::new();
            write_entry(&mut written, entry).unwrap();
            prop_assert_eq!(entry.encoded_len(), written.len());
        }

        #[test]
        fn format_then_parse_is_identity(
            entries in proptest::collection::vec(
                ("[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}", any::<String>(),
                 proptest::collection::vec(("[a-z]{1,5}", proptest::option::of("[a-z0-9]{0,5}")), 0..3)),
                0..10)
        ) {
            let mut baggage = Baggage::new();
            for (key, value, props) in &entries {
                let props: Vec<(&str, Option<&str>)> =
                    props.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                baggage.insert_with_properties(key, value, &props).unwrap();
            }
            // The counted length is what is written, escapes included.
            let header = baggage.to_string();
            prop_assert_eq!(baggage.encoded_len(), header.len());
            let reparsed = Baggage::parse(&header).unwrap();
            prop_assert_eq!(reparsed, baggage);
        }
    }
}

/// Propagates W3C Baggage in the `baggage` header.
///
/// ```
/// use infra_trace_ctx::{BaggagePropagator, Propagator};
///
/// let carrier = vec![("baggage", "userId=alice"), ("baggage", "tier=gold;ttl=60")];
/// let cx = BaggagePropagator.extract(&carrier);
/// assert_eq!(cx.baggage().get("tier"), Some("gold"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BaggagePropagator;

/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

impl crate::Propagator for BaggagePropagator {
    fn extract_baggage(&self, carrier: &dyn crate::Extractor, baggage: &mut Baggage) {
        let mut received = Baggage::new();
        let mut valid = true;
        carrier.get_all_bytes(BAGGAGE, &mut |value| {
            valid = valid && received.merge_header(value).is_ok();
        });
        if !valid {
            return;
        }
        if baggage.is_empty() {
            // A fresh context, the usual case: the members received, already unique and
            // within the limits, are the baggage as they stand.
            *baggage = received;
            return;
        }
        // The encoded length is carried along, not recounted at each insertion.
        let mut encoded_len = baggage.encoded_len();
        for entry in received.entries {
            if let Ok(len) = baggage.insert_entry_at(entry, encoded_len) {
                encoded_len = len;
            }
        }
    }

    fn inject(&self, cx: &crate::Context, carrier: &mut dyn crate::Injector) {
        // An empty baggage removes the field a reused carrier may still hold.
        if cx.baggage().is_empty() {
            carrier.remove(BAGGAGE);
        } else {
            // Keys are tokens, values percent-encoded to baggage octets and properties checked
            // against the grammar: the header is visible ASCII.
            carrier.set_value(BAGGAGE, FieldValue::vouched(cx.baggage().encode()));
        }
    }

    fn fields(&self) -> &'static [&'static str] {
        &[BAGGAGE]
    }
}
