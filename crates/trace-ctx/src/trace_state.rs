//! The W3C `tracestate` header: vendor entries that travel with the trace.
//!
//! Rules followed (W3C Trace Context Level 2, "tracestate Header"):
//! - at most 32 list members; more makes the whole header invalid;
//! - key: `(lcalpha / DIGIT) 0*255(keychar)`, keychar = `a-z 0-9 _ - * / @` (Level 2: `@` is
//!   an ordinary key character; Level 1's `tenant@system` length rules do not apply);
//! - value: up to 256 printable ASCII characters except `,` and `=`, not ending in a space;
//! - spaces and tabs around members are ignored, empty members are tolerated;
//! - repeated headers are combined in order, as if joined with `,`;
//! - a key appears once: a later duplicate of a key is dropped and the first entry kept (the
//!   spec lets a receiver keep the list rather than discard it, and discarding would lose
//!   every other vendor's entry);
//! - an updated or added key moves to the front, and survives its own insert: the other
//!   entries are truncated around it (an entry over 512 characters is refused);
//! - over [`TraceState::MAX_LEN`] characters, whole entries are dropped: first those longer
//!   than 128 characters, then from the end.
//!
//! An invalid header is discarded whole; it never affects the `traceparent`.

use std::fmt;

use crate::Error;
use crate::carrier::FieldValue;

// An immutable string shared by every span context that carries it: no interleaving to model,
// so a plain std `Arc` (cloning it is a reference count, never an allocation).
#[allow(clippy::disallowed_types)]
type Shared = std::sync::Arc<str>;

/// The ordered vendor entries of a trace, stored as their canonical header value.
///
/// Empty by default, and an empty one holds no heap memory. A non-empty one is shared, not
/// copied: cloning it (as every child span does) bumps a reference count and never allocates.
///
/// ```
/// use infra_trace_ctx::TraceState;
///
/// let mut state = TraceState::parse("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")?;
/// state.insert("congo", "ucfJifl5GOE")?;
/// assert_eq!(state.as_str(), "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
/// assert_eq!(state.get("rojo"), Some("00f067aa0ba902b7"));
/// # Ok::<(), infra_trace_ctx::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TraceState {
    /// `key=value` entries joined by `,`, no whitespace; `None` when there are none. A shared
    /// slice rather than a `String` keeps every span context 8 bytes smaller, and clones free.
    header: Option<Shared>,
}

impl TraceState {
    /// The most members a `tracestate` may have.
    pub const MAX_MEMBERS: usize = 32;
    /// The combined length this crate propagates; longer states are truncated by whole
    /// entries (the spec asks implementations to propagate at least this much).
    pub const MAX_LEN: usize = 512;
    /// Entries longer than this are the first to go when truncating.
    pub const LONG_ENTRY: usize = 128;

    /// An empty trace state.
    pub const fn new() -> Self {
        Self { header: None }
    }

    /// Parses one header value.
    ///
    /// # Errors
    ///
    /// [`Error::TraceState`] if any member breaks the grammar or there are more than 32
    /// members. A repeated key is not an error: its first entry is kept.
    pub fn parse(header: &str) -> Result<Self, Error> {
        let mut builder = TraceStateBuilder::default();
        builder.push_header(header.as_bytes());
        builder.finish()
    }

    /// Parses repeated header fields, combined in order.
    ///
    /// # Errors
    ///
    /// As [`TraceState::parse`] on the combined value.
    pub fn parse_all<'a>(headers: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut builder = TraceStateBuilder::default();
        for header in headers {
            builder.push_header(header.as_bytes());
        }
        builder.finish()
    }

    /// The canonical header value (`key=value` entries joined by `,`).
    pub fn as_str(&self) -> &str {
        self.header.as_deref().unwrap_or("")
    }

    /// The header value as a field value: keys and values are limited to 0x20 to 0x7e by
    /// the grammar every entry is checked against, and their separators are `=` and `,`.
    pub(crate) fn as_field_value(&self) -> FieldValue<'_> {
        FieldValue::vouched(self.as_str())
    }

    fn from_string(header: String) -> Self {
        Self {
            header: (!header.is_empty()).then(|| Shared::from(header)),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.header.is_none()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The entries in order, as `(key, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.as_str()
            .split(',')
            .filter(|entry| !entry.is_empty())
            .filter_map(|entry| entry.split_once('='))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value` and moves the entry to the front, as a vendor does when it
    /// resumes the trace. The inserted entry always stays: if the result would be longer
    /// than [`TraceState::MAX_LEN`] or have more than 32 members, *other* entries are dropped
    /// (whole, per the truncation rule: longer than [`TraceState::LONG_ENTRY`] first, then
    /// from the end).
    ///
    /// # Errors
    ///
    /// [`Error::TraceState`] if the key or value breaks the grammar, and
    /// [`Error::LimitExceeded`] if the entry alone is longer than [`TraceState::MAX_LEN`];
    /// either way the state is unchanged.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), Error> {
        validate_key(key)?;
        validate_value(value)?;
        if key.len() + 1 + value.len() > Self::MAX_LEN {
            return Err(Error::LimitExceeded(
                "a tracestate entry is at most 512 characters",
            ));
        }
        let mut header = String::with_capacity(self.as_str().len() + key.len() + value.len() + 2);
        header.push_str(key);
        header.push('=');
        header.push_str(value);
        let others = self.iter().filter(|(k, _)| *k != key);
        // The new entry counts as one member: keep at most 31 others.
        for (k, v) in others.take(Self::MAX_MEMBERS - 1) {
            header.push(',');
            header.push_str(k);
            header.push('=');
            header.push_str(v);
        }
        *self = Self::from_string(header);
        self.truncate_after(1, Self::MAX_LEN);
        Ok(())
    }

    /// Removes `key`, returning whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        if self.get(key).is_none() {
            return false;
        }
        let kept: Vec<(&str, &str)> = self.iter().filter(|(k, _)| *k != key).collect();
        *self = Self::from_string(join(&kept));
        true
    }

    /// Drops whole entries until the header is at most `limit` characters: first entries
    /// longer than [`TraceState::LONG_ENTRY`] characters, then entries from the end.
    pub fn truncate(&mut self, limit: usize) {
        self.truncate_after(0, limit);
    }

    /// [`TraceState::truncate`] that never drops the first `keep` entries (an entry just
    /// inserted by its vendor must survive its own insert).
    fn truncate_after(&mut self, keep: usize, limit: usize) {
        if self.as_str().len() <= limit {
            return;
        }
        let mut kept: Vec<(&str, &str)> = self.iter().collect();
        let encoded = |kept: &[(&str, &str)]| -> usize {
            kept.iter()
                .map(|(k, v)| k.len() + v.len() + 1)
                .sum::<usize>()
                + kept.len().saturating_sub(1)
        };
        while encoded(&kept) > limit && kept.len() > keep {
            let long = kept[keep..]
                .iter()
                .rposition(|(k, v)| k.len() + v.len() + 1 > Self::LONG_ENTRY);
            match long {
                Some(index) => kept.remove(keep + index),
                None => kept.pop().unwrap_or_default(),
            };
        }
        *self = Self::from_string(join(&kept));
    }
}

fn join(entries: &[(&str, &str)]) -> String {
    let mut header = String::new();
    for (k, v) in entries {
        if !header.is_empty() {
            header.push(',');
        }
        header.push_str(k);
        header.push('=');
        header.push_str(v);
    }
    header
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.as_str())
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TraceState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Accumulates repeated `tracestate` fields into one canonical value.
///
/// One pass over the bytes of each field validates each member (the list grammar, key
/// grammar and value grammar at once) and adds it to the combined value. A request without
/// `tracestate` costs nothing. A first field whose members follow each other from its first
/// byte, one comma apart (as tracers write them), is not copied member by member: that run is
/// shared as received, one allocation; only from the first whitespace, empty or repeated
/// member on is the value rebuilt.
#[derive(Debug, Default)]
pub(crate) struct TraceStateBuilder {
    /// The combined value of the fields accepted so far, unless it is `verbatim`.
    header: String,
    /// The combined value, when it is a run of the first field as received: shared without a
    /// rebuild. A member added after it moves it into `header`.
    verbatim: Option<Shared>,
    /// Where each accepted key sits in the combined value, for the duplicate check (the value
    /// is at most 32 members of at most 513 bytes, so offsets fit in `u16`).
    keys: [(u16, u16); TraceState::MAX_MEMBERS],
    members: usize,
    error: Option<Error>,
}

/// A validated member of a field: the key is `key_start..key_end`, the value ends at
/// `value_end` (optional whitespace excluded).
struct Member {
    key_start: usize,
    key_end: usize,
    value_end: usize,
}

/// Byte classes for the one-pass `tracestate` scanner.
const KEY_START: u8 = 1;
const KEY_CHAR: u8 = 2;
const VALUE_CHAR: u8 = 4;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        if b != b',' as usize && b != b'=' as usize {
            table[b] |= VALUE_CHAR;
        }
        b += 1;
    }
    let mut b = b'a' as usize;
    while b <= b'z' as usize {
        table[b] |= KEY_START | KEY_CHAR;
        b += 1;
    }
    let mut b = b'0' as usize;
    while b <= b'9' as usize {
        table[b] |= KEY_START | KEY_CHAR;
        b += 1;
    }
    table[b'_' as usize] |= KEY_CHAR;
    table[b'-' as usize] |= KEY_CHAR;
    table[b'*' as usize] |= KEY_CHAR;
    table[b'/' as usize] |= KEY_CHAR;
    table[b'@' as usize] |= KEY_CHAR;
    table
};

#[inline]
fn class(byte: u8) -> u8 {
    CLASSES[usize::from(byte)]
}

#[inline]
fn is_ows_byte(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Reads the member starting at or after `bytes[*i]` and moves `*i` past it and its comma;
/// `None` at the end of the field (empty and whitespace-only members are skipped).
fn next_member(bytes: &[u8], i: &mut usize) -> Result<Option<Member>, Error> {
    let len = bytes.len();
    loop {
        while *i < len && is_ows_byte(bytes[*i]) {
            *i += 1;
        }
        if *i == len {
            return Ok(None);
        }
        if bytes[*i] != b',' {
            break;
        }
        *i += 1;
    }
    let key_start = *i;
    if class(bytes[key_start]) & KEY_START == 0 {
        return Err(Error::TraceState(
            "a key starts with a lowercase letter or digit",
        ));
    }
    let mut at = key_start + 1;
    while at < len && class(bytes[at]) & KEY_CHAR != 0 {
        at += 1;
    }
    if at - key_start > 256 {
        return Err(Error::TraceState("a key is at most 256 characters"));
    }
    if at == len || bytes[at] != b'=' {
        return Err(Error::TraceState(
            "a member is key=value, the key holding only a-z 0-9 _ - * / @",
        ));
    }
    let key_end = at;
    let value_start = at + 1;
    at = value_start;
    while at < len && class(bytes[at]) & VALUE_CHAR != 0 {
        at += 1;
    }
    // Trailing spaces are optional whitespace, not part of the value.
    let mut value_end = at;
    while value_end > value_start && bytes[value_end - 1] == b' ' {
        value_end -= 1;
    }
    if value_end == value_start {
        return Err(Error::TraceState("empty value"));
    }
    if value_end - value_start > 256 {
        return Err(Error::TraceState("a value is at most 256 characters"));
    }
    while at < len && is_ows_byte(bytes[at]) {
        at += 1;
    }
    if at < len {
        if bytes[at] != b',' {
            return Err(Error::TraceState(
                "a value is printable ASCII without , or =",
            ));
        }
        at += 1;
    }
    *i = at;
    Ok(Some(Member {
        key_start,
        key_end,
        value_end,
    }))
}

impl TraceStateBuilder {
    /// Adds one header field; an invalid one makes the whole combined value invalid.
    pub(crate) fn push_header(&mut self, field: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(error) = self.add_field(field) {
            self.error = Some(error);
        }
    }

    fn add_field(&mut self, field: &[u8]) -> Result<(), Error> {
        // `Some(end)` while the combined value is `field[..end]`: nothing was accepted
        // before this field, and its members so far follow each other from its first byte.
        let mut run_end = (self.members == 0).then_some(0);
        let mut i = 0;
        while let Some(member) = next_member(field, &mut i)? {
            let key = &field[member.key_start..member.key_end];
            let combined = match run_end {
                Some(end) => &field[..end],
                None => self.combined().as_bytes(),
            };
            let duplicate = self.keys[..self.members]
                .iter()
                .any(|&(from, to)| &combined[usize::from(from)..usize::from(to)] == key);
            if duplicate {
                // The first entry of a key stands; a later one is dropped, not the whole list.
                continue;
            }
            if self.members == TraceState::MAX_MEMBERS {
                return Err(Error::TraceState("more than 32 members"));
            }
            if let Some(end) = run_end {
                let next = if self.members == 0 { 0 } else { end + 1 };
                if member.key_start == next {
                    self.keys[self.members] = (offset(member.key_start), offset(member.key_end));
                    self.members += 1;
                    run_end = Some(member.value_end);
                    continue;
                }
                // Whitespace, an empty member or a dropped duplicate broke the run: the
                // value is rebuilt from here on.
                self.header.reserve(field.len());
                self.header.push_str(validated_text(&field[..end]));
                run_end = None;
            }
            self.append(field, &member);
        }
        if let Some(end) = run_end
            && end > 0
        {
            self.verbatim = Some(Shared::from(validated_text(&field[..end])));
        }
        Ok(())
    }

    /// Adds `member` of `field` to the end of the rebuilt combined value.
    fn append(&mut self, field: &[u8], member: &Member) {
        if let Some(verbatim) = self.verbatim.take() {
            self.header.push_str(&verbatim);
        }
        if !self.header.is_empty() {
            self.header.push(',');
        }
        let from = offset(self.header.len());
        self.header
            .push_str(validated_text(&field[member.key_start..member.value_end]));
        self.keys[self.members] = (from, from + offset(member.key_end - member.key_start));
        self.members += 1;
    }

    /// The combined value of the fields accepted so far.
    fn combined(&self) -> &str {
        self.verbatim.as_deref().unwrap_or(&self.header)
    }

    /// The combined value, taken out of the builder. Borrowing rather than consuming the
    /// builder spares a copy of its 200 bytes, which was a measurable part of extraction.
    pub(crate) fn finish(&mut self) -> Result<TraceState, Error> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let mut state = match self.verbatim.take() {
            Some(verbatim) => TraceState {
                header: Some(verbatim),
            },
            None => TraceState::from_string(std::mem::take(&mut self.header)),
        };
        state.truncate(TraceState::MAX_LEN);
        Ok(state)
    }
}

/// The text of a range of a field that [`next_member`] has stepped over. Checking it for
/// UTF-8 again was a measurable part of extracting a `tracestate`.
#[allow(unsafe_code)]
fn validated_text(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: `next_member` advances only over bytes it accepts: space, tab, `,`, `=`, and
    // key and value characters, which the `CLASSES` table limits to 0x20..=0x7e. Callers pass
    // only ranges it has advanced over, so every byte is ASCII, which is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// A position in a combined value: at most 32 members of at most 513 bytes and their
/// commas, so below `u16::MAX` (member sizes are validated before any is accepted).
fn offset(position: usize) -> u16 {
    // Bounded as above; a larger one would be a bug in the scanner's checks.
    #[allow(clippy::cast_possible_truncation)]
    let narrowed = position as u16;
    debug_assert_eq!(usize::from(narrowed), position);
    narrowed
}

/// `key = (lcalpha / DIGIT) 0*255(keychar)`.
fn validate_key(key: &str) -> Result<(), Error> {
    validate_key_bytes(key.as_bytes())
}

fn validate_key_bytes(bytes: &[u8]) -> Result<(), Error> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(Error::TraceState("empty key"));
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(Error::TraceState(
            "a key starts with a lowercase letter or digit",
        ));
    }
    if rest.len() > 255 {
        return Err(Error::TraceState("a key is at most 256 characters"));
    }
    let keychar = |b: &u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
    };
    if rest.iter().all(keychar) {
        Ok(())
    } else {
        Err(Error::TraceState("a key holds only a-z 0-9 _ - * / @"))
    }
}

/// `value = 0*255(chr) nblk-chr`, chr = `%x20 / nblk-chr`, nblk-chr = printable but `,` `=`.
fn validate_value(value: &str) -> Result<(), Error> {
    validate_value_bytes(value.as_bytes())
}

fn validate_value_bytes(bytes: &[u8]) -> Result<(), Error> {
    let Some(&last) = bytes.last() else {
        return Err(Error::TraceState("empty value"));
    };
    if bytes.len() > 256 {
        return Err(Error::TraceState("a value is at most 256 characters"));
    }
    if last == b' ' {
        return Err(Error::TraceState("a value does not end in a space"));
    }
    let chr = |b: &u8| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=';
    if bytes.iter().all(chr) {
        Ok(())
    } else {
        Err(Error::TraceState(
            "a value is printable ASCII without , or =",
        ))
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spec rules as rows: (headers as received, expected canonical value or None = discarded).
    const VECTORS: &[(&[&str], Option<&str>)] = &[
        (&["rojo=00f067aa0ba902b7"], Some("rojo=00f067aa0ba902b7")),
        (&["rojo=1,congo=2"], Some("rojo=1,congo=2")),
        (&[" rojo=1 ,\tcongo=2\t"], Some("rojo=1,congo=2")),
        (&["rojo=1", "congo=2"], Some("rojo=1,congo=2")),
        (&["", "rojo=1"], Some("rojo=1")),
        (&["rojo=1,,  ,congo=2,"], Some("rojo=1,congo=2")),
        (&[""], Some("")),
        (&[" , "], Some("")),
        (&["1abc=x"], Some("1abc=x")),
        (&["tenant@system=x"], Some("tenant@system=x")),
        // Level 2 keys: `@` is an ordinary key character (Level 1's tenant@system rule is gone).
        (&["foo@=1", "a@b@c=2"], Some("foo@=1,a@b@c=2")),
        (&["t@vvvvvvvvvvvvvvv=1"], Some("t@vvvvvvvvvvvvvvv=1")),
        (&["@foo=1"], None),
        (&["a_-*/@9=x"], Some("a_-*/@9=x")),
        (&["k= leading space kept"], Some("k= leading space kept")),
        (&["k=v  "], Some("k=v")),
        (&["Rojo=1"], None),
        (&["_rojo=1"], None),
        (&["ro jo=1"], None),
        (&["rojo"], None),
        (&["rojo="], None),
        (&["=1"], None),
        (&["rojo=1=2"], None),
        (&["rojo=a\u{7f}"], None),
        (&["rojo=é"], None),
        // A repeated key keeps its first entry; the later duplicates are dropped.
        (&["foo=1,foo=1"], Some("foo=1")),
        (&["foo=1,foo=2"], Some("foo=1")),
        (&["rojo=1,congo=2,rojo=3"], Some("rojo=1,congo=2")),
        (&["rojo=1", "rojo=2"], Some("rojo=1")),
        (&["rojo=1", "bad key=2"], None),
        // A canonical first field is kept as received, and still combined with later ones.
        (&["a=1,b=2", "c=3,a=4"], Some("a=1,b=2,c=3")),
        (&["a=1,b=2", ""], Some("a=1,b=2")),
        (&["a=1,b=2", "b=5"], Some("a=1,b=2")),
        (&["", "a=1,b=2", " c=3"], Some("a=1,b=2,c=3")),
        (&["a=1,b=2,"], Some("a=1,b=2")),
    ];

    /// What a parsed state hands a carrier unchecked (`FieldValue`) holds only spaces and
    /// visible ASCII, whatever whitespace and empty members the received fields had.
    #[test]
    fn a_parsed_state_is_a_field_value() {
        for headers in [
            &["rojo=1"][..],
            &["\t rojo=1 \t,\t,congo=a b\t"][..],
            &["a=1 ,", " \tb=x y"][..],
        ] {
            let state = TraceState::parse_all(headers.iter().copied()).unwrap();
            assert!(!state.is_empty(), "{headers:?}");
            assert_eq!(
                FieldValue::new(state.as_str()).as_ref(),
                Some(&state.as_field_value()),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn spec_vectors() {
        for (headers, expected) in VECTORS {
            let parsed = TraceState::parse_all(headers.iter().copied());
            match expected {
                Some(canonical) => {
                    let state = parsed.unwrap_or_else(|e| panic!("{headers:?} rejected: {e}"));
                    assert_eq!(state.as_str(), *canonical, "{headers:?}");
                }
                None => assert!(parsed.is_err(), "{headers:?} accepted: {parsed:?}"),
            }
        }
    }

    #[test]
    fn key_and_value_lengths() {
        let key256 = "k".repeat(256);
        let key257 = "k".repeat(257);
        let value256 = "v".repeat(256);
        let value257 = "v".repeat(257);
        assert!(TraceState::parse(&format!("{key256}=v")).is_ok());
        assert!(TraceState::parse(&format!("{key257}=v")).is_err());
        assert!(TraceState::parse(&format!("k={value256}")).is_ok());
        assert!(TraceState::parse(&format!("k={value257}")).is_err());
    }

    #[test]
    fn thirty_two_members_pass_thirty_three_do_not() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(TraceState::parse(&members(32)).unwrap().len(), 32);
        assert!(TraceState::parse(&members(33)).is_err());
        // Split over repeated headers, the limit is on the combined value.
        let first = members(20);
        let second = (20..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(TraceState::parse_all([first.as_str(), second.as_str()]).is_err());
    }

    #[test]
    fn insert_moves_the_key_to_the_front() {
        let mut state = TraceState::parse("a=1,b=2,c=3").unwrap();
        state.insert("c", "9").unwrap();
        assert_eq!(state.as_str(), "c=9,a=1,b=2");
        state.insert("d", "4").unwrap();
        assert_eq!(state.as_str(), "d=4,c=9,a=1,b=2");
        assert!(state.insert("Bad", "x").is_err());
        assert!(state.insert("ok", "x,y").is_err());
        assert_eq!(state.as_str(), "d=4,c=9,a=1,b=2");
        assert!(state.remove("c"));
        assert!(!state.remove("c"));
        assert_eq!(state.as_str(), "d=4,a=1,b=2");
    }

    #[test]
    fn insert_into_a_full_state_drops_the_last_member() {
        let full = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let mut state = TraceState::parse(&full).unwrap();
        state.insert("new", "v").unwrap();
        assert_eq!(state.len(), 32);
        assert_eq!(state.iter().next(), Some(("new", "v")));
        assert_eq!(state.get("k31"), None);
    }

    #[test]
    fn truncation_drops_long_entries_first_then_from_the_end() {
        let long = format!("long={}", "x".repeat(200));
        let shorts: Vec<String> = (0..8).map(|i| format!("s{i}={}", "y".repeat(50))).collect();
        // 8 short entries of 53 chars + commas = 431; with the long one it exceeds 512.
        let header = format!("{},{long},{}", shorts[..4].join(","), shorts[4..].join(","));
        let state = TraceState::parse(&header).unwrap();
        assert!(state.get("long").is_none(), "the long entry goes first");
        assert_eq!(state.len(), 8);
        assert!(state.as_str().len() <= TraceState::MAX_LEN);

        let many: Vec<String> = (0..12)
            .map(|i| format!("s{i:02}={}", "y".repeat(50)))
            .collect();
        let state = TraceState::parse(&many.join(",")).unwrap();
        assert!(state.as_str().len() <= TraceState::MAX_LEN);
        let keys: Vec<&str> = state.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "s00", "s01", "s02", "s03", "s04", "s05", "s06", "s07", "s08"
            ]
        );
    }

    #[test]
    fn insert_keeps_the_inserted_entry_and_truncates_the_others() {
        // Three members of 111, 111 and 110 characters: 334 with the commas.
        let header = format!(
            "a1={},a2={},a3={}",
            "x".repeat(108),
            "y".repeat(108),
            "z".repeat(107)
        );
        assert_eq!(header.len(), 334);
        let key = "vendor-with-18-chr";
        assert_eq!(key.len(), 18);
        let value = "v".repeat(169);
        let mut state = TraceState::parse(&header).unwrap();
        state.insert(key, &value).unwrap();
        assert_eq!(state.iter().next(), Some((key, value.as_str())));
        assert!(state.as_str().len() <= TraceState::MAX_LEN);
        // The last of the others goes; the first two still fit (188 + 1 + 223 = 412).
        let keys: Vec<&str> = state.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [key, "a1", "a2"]);

        // An entry that cannot fit on its own (513 characters) is refused, state unchanged.
        let before = state.clone();
        let error = state.insert(&"k".repeat(256), &"v".repeat(256));
        assert!(matches!(error, Err(Error::LimitExceeded(_))), "{error:?}");
        assert_eq!(state, before);
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_*/@-]{0,20}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[ -+\\--<>-~]{0,20}[!-+\\--<>-~]"
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(
            entries in proptest::collection::vec((key(), value()), 0..12)
        ) {
            let mut state = TraceState::new();
            for (k, v) in entries.iter().rev() {
                state.insert(k, v).unwrap();
            }
            let reparsed = TraceState::parse(&state.to_string()).unwrap();
            prop_assert_eq!(&reparsed, &state);
            prop_assert!(state.as_str().len() <= TraceState::MAX_LEN);
        }
    }
}
