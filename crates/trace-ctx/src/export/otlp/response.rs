//! The receiver's answer to an accepted export: OTLP's partial success, the spans it
//! rejected and why (`ExportTraceServiceResponse.partial_success`), in the encoding the
//! request was sent in.
//!
//! A receiver that rejects some spans of a request still answers `200`, with the count and a
//! message in the body; the client must not retry them. Reading the body is how the exporter
//! tells "every span stored" from "some dropped".

/// The most of a response body read. A partial success is a number and a message; a larger
/// body is read no further and counts as a plain success.
pub(super) const MAX_BODY: u64 = 64 * 1024;

/// The receiver's partial success: how many spans it rejected, and its message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartialSuccess {
    /// Spans of the request the receiver did not store.
    pub(crate) rejected: u64,
    /// Why, in the receiver's words (may be empty).
    pub(crate) message: String,
}

/// Reads an `ExportTraceServiceResponse` in protobuf: field 1, `partial_success`, holding
/// `rejected_spans` (field 1, int64) and `error_message` (field 2, string). Unknown fields are
/// skipped; a repeated field takes its last value, as protobuf merges. `None` for a body
/// that is not protobuf.
pub(crate) fn decode_protobuf(body: &[u8]) -> Option<PartialSuccess> {
    let mut answer = PartialSuccess::default();
    let mut fields = Fields(body);
    while let Some((number, value)) = fields.next_field()? {
        if let (1, Value::Bytes(inner)) = (number, value) {
            let mut inner = Fields(inner);
            while let Some((number, value)) = inner.next_field()? {
                match (number, value) {
                    // int64 on the wire; a negative count (a broken receiver) rejects nothing.
                    (1, Value::Varint(count)) => {
                        answer.rejected = i64::try_from(count).map_or(0, i64::unsigned_abs);
                    }
                    (2, Value::Bytes(text)) => {
                        answer.message = String::from_utf8_lossy(text).into_owned();
                    }
                    _ => {}
                }
            }
        }
    }
    Some(answer)
}

/// Reads an `ExportTraceServiceResponse` in OTLP/JSON: `partialSuccess` (or
/// `partial_success`) with `rejectedSpans` (a decimal string, as the protobuf JSON mapping
/// writes 64-bit integers, or a number) and `errorMessage`, a `null` field read as its default.
/// `None` for a body that is not a JSON object; an empty body is an empty response.
pub(crate) fn decode_json(body: &[u8]) -> Option<PartialSuccess> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(PartialSuccess::default());
    }
    let response: serde_json::Value = serde_json::from_slice(body).ok()?;
    let response = response.as_object()?;
    let Some(partial) = field(response, "partialSuccess", "partial_success") else {
        return Some(PartialSuccess::default());
    };
    let partial = partial.as_object()?;
    let rejected = match field(partial, "rejectedSpans", "rejected_spans") {
        None => 0,
        Some(serde_json::Value::String(text)) => text.parse::<i64>().ok()?.try_into().unwrap_or(0),
        Some(number) => number.as_i64()?.try_into().unwrap_or(0),
    };
    let message = match field(partial, "errorMessage", "error_message") {
        None => String::new(),
        Some(text) => text.as_str()?.to_owned(),
    };
    Some(PartialSuccess { rejected, message })
}

/// The field under either name; `None` when absent or `null`, which the proto3 JSON mapping
/// reads as the field's default (a count that comes with a null message still counts).
fn field<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    json_name: &str,
    proto_name: &str,
) -> Option<&'a serde_json::Value> {
    object
        .get(json_name)
        .or_else(|| object.get(proto_name))
        .filter(|value| !value.is_null())
}

/// A protobuf field's value, by wire type.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The next field's number and value: `Some(None)` at the end, `None` when the bytes are
    /// not protobuf (a truncated field, a wire type that does not exist).
    fn next_field(&mut self) -> Option<Option<(u64, Value<'a>)>> {
        if self.0.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let (bytes, rest) = self.0.split_at_checked(len)?;
                self.0 = rest;
                Value::Bytes(bytes)
            }
            5 => self.skip(4)?,
            _ => return None,
        };
        Some(Some((key >> 3, value)))
    }

    fn skip(&mut self, len: usize) -> Option<Value<'a>> {
        self.0 = self.0.get(len..)?;
        Some(Value::Fixed)
    }

    /// A base-128 varint of at most ten bytes.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0_u64;
        for (index, &byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.0 = &self.0[index + 1..];
                return Some(value);
            }
        }
        None
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn protobuf_partial_success_with_unknown_fields_around_it() {
        // field 9 (varint 5), field 1 { field 1: 3, field 7 (fixed32), field 2: "full" }
        let body = [
            0x48, 0x05, 0x0a, 0x0d, 0x08, 0x03, 0x3d, 1, 2, 3, 4, 0x12, 0x04, b'f', b'u', b'l',
            b'l',
        ];
        let expected = PartialSuccess {
            rejected: 3,
            message: "full".into(),
        };
        assert_eq!(decode_protobuf(&body), Some(expected));
        assert_eq!(decode_protobuf(&[]), Some(PartialSuccess::default()));
    }

    #[test]
    fn broken_protobuf_is_no_answer() {
        for body in [&[0x0a, 0x05, 0x08][..], &[0x0b], &[0x08, 0x80], &[0x08; 1]] {
            assert_eq!(decode_protobuf(body), None, "{body:?}");
        }
        // A negative count, as int64 sends it (ten bytes), rejects nothing.
        let negative = [
            0x0a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(decode_protobuf(&negative).map(|p| p.rejected), Some(0));
    }

    #[test]
    fn json_names_in_either_style_and_counts_as_strings_or_numbers() {
        let camel = br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"quota"}}"#;
        let snake = br#"{"partial_success":{"rejected_spans":2,"error_message":"quota"}}"#;
        for body in [&camel[..], &snake[..]] {
            let answer = decode_json(body).expect("valid");
            assert_eq!((answer.rejected, answer.message.as_str()), (2, "quota"));
        }
        assert_eq!(decode_json(b" "), Some(PartialSuccess::default()));
        assert_eq!(decode_json(b"{}"), Some(PartialSuccess::default()));
        assert_eq!(decode_json(b"[1]"), None);
        assert_eq!(
            decode_json(br#"{"partialSuccess":{"rejectedSpans":"x"}}"#),
            None
        );
    }

    #[test]
    fn json_nulls_read_as_the_fields_defaults() {
        // The proto3 JSON mapping accepts `null` for any field and reads it as the default:
        // a rejection whose message is null still rejects its spans.
        let cases: [(&[u8], u64, &str); 3] = [
            (
                br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":null}}"#,
                3,
                "",
            ),
            (
                br#"{"partialSuccess":{"rejectedSpans":null,"errorMessage":"slow"}}"#,
                0,
                "slow",
            ),
            (br#"{"partialSuccess":null}"#, 0, ""),
        ];
        for (body, rejected, message) in cases {
            let expected = PartialSuccess {
                rejected,
                message: message.to_owned(),
            };
            assert_eq!(
                decode_json(body),
                Some(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
