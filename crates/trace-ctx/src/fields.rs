//! Splitting a header value on a one-byte separator (B3's `-`, Jaeger's `:`, baggage's `,`,
//! `;` and `=`), looking for the separator eight bytes at a time: a field of 16 or 32 hex
//! digits is crossed in two to four word steps instead of a comparison per byte.

use crate::id::{HIGH_BITS, LANES};

/// The position of the first `needle` in `haystack`.
#[inline]
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    let mut words = haystack.chunks_exact(8);
    let mut start = 0;
    for word in &mut words {
        let word: [u8; 8] = word.try_into().ok()?;
        // Bytes equal to the needle become zero; the lowest lane whose high bit the
        // subtraction sets is the first zero byte (a borrow only ever marks lanes above a
        // true zero, never below it).
        let equal = u64::from_le_bytes(word) ^ (LANES * u64::from(needle));
        let zeros = equal.wrapping_sub(LANES) & !equal & HIGH_BITS;
        if zeros != 0 {
            return Some(start + zeros.trailing_zeros() as usize / 8);
        }
        start += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&byte| byte == needle)
        .map(|at| start + at)
}

/// The fields of a value separated by `separator`, as `<[u8]>::split` yields them (an empty
/// value is one empty field; a separator at either end makes an empty field there).
pub(crate) struct Fields<'a> {
    rest: Option<&'a [u8]>,
    separator: u8,
}

impl<'a> Fields<'a> {
    pub(crate) const fn new(value: &'a [u8], separator: u8) -> Self {
        Self {
            rest: Some(value),
            separator,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find_byte(rest, self.separator) {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// `value` before and after the first `separator` (`None` without one).
pub(crate) fn split_once(value: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = find_byte(value, separator)?;
    Some((&value[..at], &value[at + 1..]))
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_every_byte_in_every_position() {
        for len in 0..=20u8 {
            for at in 0..len {
                for needle in 0..=u8::MAX {
                    // Fill with the bytes around the needle, the likeliest to confuse lanes.
                    let mut haystack: Vec<u8> = (0..len).map(|i| needle ^ (1 + i % 3)).collect();
                    assert_eq!(find_byte(&haystack, needle), None);
                    haystack[usize::from(at)] = needle;
                    assert_eq!(
                        find_byte(&haystack, needle),
                        Some(usize::from(at)),
                        "{haystack:?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn split_once_splits_as_the_standard_library_does(
            value in proptest::collection::vec(
                proptest::sample::select(&b",;= a\x00\x80\xff"[..]),
                0..30,
            ),
            separator in proptest::sample::select(&b",;=\x80"[..]),
        ) {
            let expected = value
                .iter()
                .position(|&byte| byte == separator)
                .map(|at| (&value[..at], &value[at + 1..]));
            prop_assert_eq!(split_once(&value, separator), expected);
        }

        #[test]
        fn fields_split_as_the_standard_library_does(
            value in proptest::collection::vec(
                proptest::sample::select(&b"-:-:0a\x00\x80\xff"[..]),
                0..40,
            ),
            separator in proptest::sample::select(&b"-:a\x00\x80"[..]),
        ) {
            let ours: Vec<&[u8]> = Fields::new(&value, separator).collect();
            let expected: Vec<&[u8]> = value.split(|&byte| byte == separator).collect();
            prop_assert_eq!(ours, expected);
        }

        /// Any bytes and any separator, including bytes from 0x80 up that differ from the
        /// separator only in the high bit, against the standard library's split.
        #[test]
        fn fields_split_any_bytes_as_the_standard_library_does(
            separator in proptest::prelude::any::<u8>(),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            noise in proptest::collection::vec(0u8..4, 0..48),
        ) {
            // Bias toward the separator's neighbours: itself, with the high bit flipped,
            // one above and one below.
            let value: Vec<u8> = value
                .iter()
                .zip(noise.iter().chain(std::iter::repeat(&4)))
                .map(|(&byte, &kind)| match kind {
                    0 => separator,
                    1 => separator ^ 0x80,
                    2 => separator.wrapping_add(1),
                    3 => separator.wrapping_sub(1),
                    _ => byte,
                })
                .collect();
            let ours: Vec<&[u8]> = Fields::new(&value, separator).collect();
            let expected: Vec<&[u8]> = value.split(|&byte| byte == separator).collect();
            prop_assert_eq!(ours, expected);
        }

        /// Any text with tabs, spaces and multi-byte characters, every ASCII separator: the
        /// pieces fall between characters, as `str`'s splits cut them.
        #[test]
        fn text_with_any_ascii_separator_splits_as_the_standard_library_does(
            text in "[\\x00-\\x7f\u{80}\u{e9}\u{100}\u{1f600}\t ]{0,40}",
            separator in 0u8..0x80,
        ) {
            let ours: Vec<&[u8]> = Fields::new(text.as_bytes(), separator).collect();
            let expected: Vec<&[u8]> =
                text.split(char::from(separator)).map(str::as_bytes).collect();
            prop_assert_eq!(ours, expected);
            let expected = text
                .split_once(char::from(separator))
                .map(|(before, after)| (before.as_bytes(), after.as_bytes()));
            prop_assert_eq!(split_once(text.as_bytes(), separator), expected);
        }
    }
}
