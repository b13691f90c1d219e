//! CRC-32C (Castagnoli), the checksum of records and segment headers.
//!
//! The `crc32c` crate computes it with the CPU's CRC instruction, three streams at a time for
//! long inputs. For the short inputs of small records its set-up costs more than the bytes: by
//! callgrind, about 220 instructions for a 100-byte record's 104 checksummed bytes, a third of
//! an append's own instructions under `FsyncPolicy::Never`. So on x86-64 with SSE 4.2, inputs of
//! up to [`SHORT`] bytes go through the instruction directly, eight bytes at a time (then four,
//! then one), and longer ones through the crate. A record's two checksums, of the salt and length
//! and then on over the payload, are one call: [`append_word_then`].

/// Inputs up to this long take the direct path.
const SHORT: usize = 256;

/// The CRC-32C of `bytes` following bytes whose CRC-32C was `crc` (0 for none), as
/// `crc32c::crc32c_append` defines it.
pub(crate) fn append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= SHORT && std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked on the line above.
        #[allow(unsafe_code)]
        return unsafe { sse42::append(crc, bytes) };
    }
    crc32c::crc32c_append(crc, bytes)
}

/// The CRC-32C of `word` following bytes whose CRC-32C was `crc`, and that of `bytes` following
/// both: a record's header and payload checksums (see `record`). With SSE 4.2 the word takes one
/// instruction, and short `bytes` go on in the same call.
pub(crate) fn append_word_then(crc: u32, word: [u8; 4], bytes: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        if bytes.len() <= SHORT {
            // SAFETY: the CPU has SSE 4.2, checked above.
            #[allow(unsafe_code)]
            return unsafe { sse42::append_word_then(crc, word, bytes) };
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let head = unsafe { sse42::append_word(crc, word) };
        return (head, crc32c::crc32c_append(head, bytes));
    }
    let head = crc32c::crc32c_append(crc, &word);
    (head, crc32c::crc32c_append(head, bytes))
}

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u32, _mm_crc32_u64};

    /// The CRC-32C of `word` following bytes whose CRC-32C was `crc`.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn append_word(crc: u32, word: [u8; 4]) -> u32 {
        !_mm_crc32_u32(!crc, u32::from_le_bytes(word))
    }

    /// [`super::append_word_then`] for short `bytes`, in one call.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn append_word_then(crc: u32, word: [u8; 4], bytes: &[u8]) -> (u32, u32) {
        let head = append_word(crc, word);
        (head, append(head, bytes))
    }

    /// [`super::append`] with the SSE 4.2 `crc32` instruction.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn append(crc: u32, bytes: &[u8]) -> u32 {
        let (words, rest) = bytes.as_chunks::<8>();
        let mut state = u64::from(!crc);
        for word in words {
            state = _mm_crc32_u64(state, u64::from_le_bytes(*word));
        }
        // The instruction leaves the upper half zero.
        let mut state = state as u32;
        let rest = match rest.split_first_chunk::<4>() {
            Some((word, rest)) => {
                state = _mm_crc32_u32(state, u32::from_le_bytes(*word));
                rest
            }
            None => rest,
        };
        for &byte in rest {
            state = _mm_crc32_u8(state, byte);
        }
        !state
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// CRC-32C bit by bit from its definition (reflected polynomial 0x82F63B78), sharing
    /// nothing with the code under test.
    pub(crate) fn bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_word_then_bytes_matches_the_definition_on_both_paths() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 131 % 251) as u8).collect();
        let word = [0x12, 0x34, 0x56, 0x78];
        for seed in [0, 0xDEAD_BEEF] {
            for len in (0..=SHORT + 9).chain([511, 1000]) {
                let (head, body) = append_word_then(seed, word, &bytes[..len]);
                assert_eq!(head, append(seed, &word), "seed {seed:x}");
                let whole: Vec<u8> = word.iter().chain(&bytes[..len]).copied().collect();
                assert_eq!(body, append(seed, &whole), "seed {seed:x} length {len}");
            }
        }
        let whole: Vec<u8> = word.iter().chain(&bytes[..9]).copied().collect();
        assert_eq!(append_word_then(0, word, &bytes[..9]).1, bitwise(&whole));
    }

    #[test]
    fn matches_the_definition_on_both_paths_and_in_pieces() {
        assert_eq!(
            bitwise(b"123456789"),
            0xE306_9283,
            "the standard check value"
        );
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in (0..=SHORT + 9).chain([511, 1000]) {
            let whole = &bytes[..len];
            assert_eq!(append(0, whole), bitwise(whole), "length {len}");
            for split in [0, len / 3, len] {
                let (a, b) = whole.split_at(split);
                assert_eq!(
                    append(append(0, a), b),
                    bitwise(whole),
                    "{len} split at {split}"
                );
            }
        }
    }
}
