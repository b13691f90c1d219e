//! How a message is stored in the message log: its producer id, send time and not-before
//! time in front of the payload, so a restart can rebuild the dedup window and the delays.
//!
//! ```text
//! [flags u8][sent_at_ms u64][not_before_ms u64, if flag 0b10][id_len u8, id, if flag 0b01][payload]
//! ```
//!
//! Times are wall-clock milliseconds since the Unix epoch: the monotonic clock of the process
//! that wrote them means nothing after a restart.

use bytes::Bytes;

use crate::error::Error;

const HAS_ID: u8 = 0b01;
const HAS_NOT_BEFORE: u8 = 0b10;

/// The longest producer message id, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// A stored message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) id: Option<Bytes>,
    pub(crate) sent_at_ms: u64,
    pub(crate) not_before_ms: Option<u64>,
    pub(crate) payload: Bytes,
}

impl Envelope {
    /// The stored bytes; the id must be at most [`MAX_ID_LEN`] bytes (checked by the caller).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let id_len = self.id.as_ref().map_or(0, |id| 1 + id.len());
        let mut out = Vec::with_capacity(17 + id_len + self.payload.len());
        let mut flags = 0;
        if self.id.is_some() {
            flags |= HAS_ID;
        }
        if self.not_before_ms.is_some() {
            flags |= HAS_NOT_BEFORE;
        }
        out.push(flags);
        out.extend_from_slice(&self.sent_at_ms.to_le_bytes());
        if let Some(not_before) = self.not_before_ms {
            out.extend_from_slice(&not_before.to_le_bytes());
        }
        if let Some(id) = &self.id {
            out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(id);
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses stored bytes; anything malformed is [`Error::CorruptMessage`].
    pub(crate) fn decode(offset: u64, bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason| Error::CorruptMessage { offset, reason };
        let (&flags, rest) = bytes.split_first().ok_or(bad("empty record"))?;
        if flags & !(HAS_ID | HAS_NOT_BEFORE) != 0 {
            return Err(bad("unknown flags"));
        }
        let take_u64 = |rest: &[u8]| -> Option<(u64, usize)> {
            let word: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            Some((u64::from_le_bytes(word), 8))
        };
        let (sent_at_ms, used) = take_u64(rest).ok_or(bad("truncated send time"))?;
        let mut rest = &rest[used..];
        let mut not_before_ms = None;
        if flags & HAS_NOT_BEFORE != 0 {
            let (value, used) = take_u64(rest).ok_or(bad("truncated not-before time"))?;
            not_before_ms = Some(value);
            rest = &rest[used..];
        }
        let mut id = None;
        if flags & HAS_ID != 0 {
            let (&len, after) = rest.split_first().ok_or(bad("truncated id length"))?;
            let len = usize::from(len);
            let bytes = after.get(..len).ok_or(bad("truncated id"))?;
            id = Some(Bytes::copy_from_slice(bytes));
            rest = &after[len..];
        }
        Ok(Self {
            id,
            sent_at_ms,
            not_before_ms,
            payload: Bytes::copy_from_slice(rest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_and_without_options() {
        let cases = [
            Envelope {
                id: None,
                sent_at_ms: 1,
                not_before_ms: None,
                payload: Bytes::from_static(b"plain"),
            },
            Envelope {
                id: Some(Bytes::from_static(b"order-17")),
                sent_at_ms: u64::MAX,
                not_before_ms: Some(5),
                payload: Bytes::new(),
            },
        ];
        for envelope in cases {
            assert_eq!(Envelope::decode(3, &envelope.encode()).unwrap(), envelope);
        }
    }

    #[test]
    fn truncated_or_unknown_envelopes_are_errors() {
        let full = Envelope {
            id: Some(Bytes::from_static(b"abc")),
            sent_at_ms: 9,
            not_before_ms: Some(10),
            payload: Bytes::new(),
        }
        .encode();
        for len in 0..full.len() {
            assert!(matches!(
                Envelope::decode(4, &full[..len]),
                Err(Error::CorruptMessage { offset: 4, .. })
            ));
        }
        assert!(Envelope::decode(4, &[0x80, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
