//! Header values formatted on the stack: a propagator writes ids and punctuation into a
//! fixed buffer and hands the carrier a `&str`, with no `String` and no formatting machinery
//! in between.

use crate::carrier::FieldValue;
use crate::id::write_hex;

/// Up to `N` bytes of ASCII text, built by appending.
///
/// Every writer in this crate knows its longest value at compile time (a B3 or Jaeger
/// header is at most 69 bytes), so `N` is chosen to fit it; appending past `N` is a bug in
/// this crate and panics.
pub(crate) struct InlineText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> InlineText<N> {
    pub(crate) const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends ASCII text.
    pub(crate) fn push_str(&mut self, text: &str) {
        let end = self.len + text.len();
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
    }

    /// Appends `bytes` as lowercase hex, two digits each.
    #[inline]
    pub(crate) fn push_hex(&mut self, bytes: &[u8]) {
        let end = self.len + 2 * bytes.len();
        write_hex(bytes, &mut self.bytes[self.len..end]);
        self.len = end;
    }

    /// Appends `value` in lowercase hex without leading zeros (`0` for zero).
    #[inline]
    pub(crate) fn push_minimal_hex(&mut self, value: u8) {
        if value >= 0x10 {
            self.push_hex(&[value]);
        } else {
            let mut pair = [0; 2];
            write_hex(&[value], &mut pair);
            self.bytes[self.len] = pair[1];
            self.len += 1;
        }
    }

    // Checking the bytes were UTF-8 was a measurable part of each B3 and Jaeger injection.
    #[allow(unsafe_code)]
    pub(crate) fn as_str(&self) -> &str {
        let text = &self.bytes[..self.len];
        debug_assert!(std::str::from_utf8(text).is_ok());
        // SAFETY: the fields are private and only the `push_*` methods write them, each a
        // whole `&str` or lowercase hex digits from `write_hex` (ASCII: see
        // `hex_words_hold_every_digit_in_every_position`) ending where `len` is set, so the
        // bytes up to `len` are valid UTF-8 pieces one after another, which is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(text) }
    }

    /// The text as a field value: hex digits and the ASCII punctuation the writers append.
    pub(crate) fn as_field_value(&self) -> FieldValue<'_> {
        FieldValue::vouched(self.as_str())
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn appends_text_and_hex() {
        let mut text = InlineText::<16>::new();
        assert_eq!(text.as_str(), "");
        text.push_hex(&[0x00, 0xaf]);
        text.push_str(":");
        text.push_minimal_hex(0x0);
        text.push_str("-");
        text.push_minimal_hex(0x3);
        text.push_str("-");
        text.push_minimal_hex(0xfe);
        assert_eq!(text.as_str(), "00af:0-3-fe");
    }
}
