//! OpenTelemetry consistent probability sampling, carried in `tracestate`.
//!
//! Every participant compares one 56-bit *randomness* value with its 56-bit *rejection
//! threshold* and keeps the span when `randomness >= threshold`, so a service that samples
//! with a higher probability keeps a superset of what a lower one keeps. Both travel in the
//! `ot` entry of `tracestate` (OpenTelemetry "TraceState: Probability Sampling"):
//!
//! - `th:` the threshold of the sampler that kept the span, as 1 to 14 lowercase hex digits
//!   with trailing zeros removed (`ot=th:8` is 50 %, `ot=th:0` is 100 %);
//! - `rv:` an explicit randomness value, exactly 14 lowercase hex digits; when present it is
//!   used instead of the trace id's low 56 bits.
//!
//! ```
//! use infra_trace_ctx::{Threshold, TraceState};
//!
//! let third = Threshold::from_probability(1.0 / 3.0).unwrap();
//! assert_eq!(third.to_string(), "aaab");
//!
//! let mut state = TraceState::parse("rojo=00f067aa0ba902b7,ot=rv:6e6d1a75832a2f")?;
//! assert_eq!(state.ot_randomness(), Some(0x6e6d1a75832a2f));
//! state.set_ot_threshold(Some(third))?;
//! assert_eq!(state.as_str(), "ot=th:aaab;rv:6e6d1a75832a2f,rojo=00f067aa0ba902b7");
//! assert_eq!(state.ot_threshold(), Some(third));
//! # Ok::<(), infra_trace_ctx::Error>(())
//! ```

use std::fmt;

use crate::{Error, TraceState};

/// The `tracestate` key OpenTelemetry's sub-keys live under.
const OT: &str = "ot";
/// Randomness and thresholds are 56-bit values.
const BITS: u32 = 56;
/// Hex digits in a full-width `th` or `rv` value.
const DIGITS: usize = 14;

/// A rejection threshold: a span is sampled when its 56-bit randomness is at or above it.
///
/// Threshold `0` keeps everything; the largest, `2^56 - 1`, keeps one span in `2^56`.
/// "Never" is not a probability and has no threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Threshold(u64);

impl Threshold {
    /// Keeps every span (`th:0`).
    pub const ALWAYS: Self = Self(0);

    /// Significant hex digits [`Threshold::from_probability`] keeps, as OpenTelemetry
    /// recommends for SDKs.
    pub const DEFAULT_PRECISION: u8 = 4;

    /// The threshold with these 56 bits, or `None` if `bits` is `2^56` or more.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        if bits >> BITS == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The threshold as a 56-bit integer.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The threshold for keeping `probability` of all spans, rounded to
    /// [`Threshold::DEFAULT_PRECISION`] significant hex digits.
    ///
    /// `None` below `2^-56` (including 0 and NaN): never sampling is not probability sampling.
    /// Probabilities above 1 keep everything.
    pub fn from_probability(probability: f64) -> Option<Self> {
        Self::from_probability_with_precision(probability, Self::DEFAULT_PRECISION)
    }

    /// [`Threshold::from_probability`] with `precision` significant hex digits (clamped to
    /// 1..=14). The specification's example algorithm: the threshold is
    /// `2^56 - round(probability * 2^56)`, rounded to the nearest multiple of the last kept
    /// digit (halves up). The digits kept are `precision` plus one for every factor of 16 by
    /// which the probability, or one minus it, is small: a probability near 0 gets a digit
    /// per leading `f` of its threshold, and, as the OpenTelemetry Collector's `pkg/sampling`
    /// does (the specification's example does not), one near 1 a digit per leading `0`, so
    /// 99.9999 % is not rounded to 100 % (at most 14 digits).
    ///
    /// ```
    /// use infra_trace_ctx::Threshold;
    ///
    /// let th = |probability, digits| {
    ///     Threshold::from_probability_with_precision(probability, digits)
    ///         .unwrap()
    ///         .to_string()
    /// };
    /// assert_eq!([th(0.01, 3), th(0.01, 4), th(0.01, 5)], ["fd71", "fd70a", "fd70a4"]);
    /// assert_eq!(th(0.999_999, 4), "000010c7");
    /// ```
    pub fn from_probability_with_precision(probability: f64, precision: u8) -> Option<Self> {
        const MIN_PROBABILITY: f64 = 1.0 / (1u64 << BITS) as f64;
        if probability.is_nan() || probability < MIN_PROBABILITY {
            return None;
        }
        if probability >= 1.0 {
            return Some(Self::ALWAYS);
        }
        // frexp's exponent: x = m * 2^e with m in [0.5, 1). Both values are normal here:
        // the probability is at least 2^-56, and 1 - probability (exact for probabilities
        // of 1/2 and more, Sterbenz) at least 2^-53.
        let exponent = |x: f64| {
            #[allow(clippy::cast_possible_wrap)]
            let stored = ((x.to_bits() >> 52) & 0x7ff) as i64;
            stored - 1022
        };
        let extra = (-exponent(probability) / 4).max(-exponent(1.0 - probability) / 4);
        let digits = (i64::from(precision.clamp(1, 14)) + extra).min(14);
        // probability * 2^56 is exact (a power-of-two scale) and lies in [1, 2^56).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let kept = (probability * (1u64 << BITS) as f64).round() as u64;
        let exact = (1u64 << BITS) - kept;
        // 0 <= 14 - digits <= 13 by the clamps above.
        let dropped_bits = 4 * u32::try_from(14 - digits).unwrap_or(0);
        let rounded = if dropped_bits == 0 {
            exact
        } else {
            ((exact + (1 << (dropped_bits - 1))) >> dropped_bits) << dropped_bits
        };
        // The round-up cannot reach 2^56 (a probability that small keeps enough digits for
        // its leading `f`s); saturating keeps that an argument, not a wrap to `th:0`.
        Some(Self(rounded.min((1u64 << BITS) - 1)))
    }

    /// The probability of keeping a span: `(2^56 - threshold) / 2^56`.
    #[allow(clippy::cast_precision_loss)]
    pub fn probability(self) -> f64 {
        const RANGE: f64 = (1u64 << BITS) as f64;
        ((1u64 << BITS) - self.0) as f64 / RANGE
    }

    /// How many spans of the population a kept span stands for (`1 / probability`).
    pub fn adjusted_count(self) -> f64 {
        1.0 / self.probability()
    }

    /// Whether a span with this 56-bit randomness is kept.
    pub const fn samples(self, randomness: u64) -> bool {
        randomness >= self.0
    }

    /// Reads a `th` value: 1 to 14 lowercase hex digits, extended with trailing zeros.
    ///
    /// # Errors
    ///
    /// [`Error::TraceState`] for anything else.
    pub fn parse(th: &str) -> Result<Self, Error> {
        if th.is_empty() || th.len() > DIGITS {
            return Err(Error::TraceState("th is 1 to 14 hex digits"));
        }
        let value =
            parse_lower_hex(th).ok_or(Error::TraceState("th holds only lowercase hex digits"))?;
        // 4 * (14 - len) < 56 bits of shift, and value < 16^len.
        let shift = 4 * u32::try_from(DIGITS - th.len()).unwrap_or(0);
        Ok(Self(value << shift))
    }
}

/// `th` encoding: the 14-digit hex value with trailing zeros removed (`0` stays `0`).
impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut value = self.0;
        let mut width = DIGITS;
        while width > 1 && value & 0xf == 0 {
            value >>= 4;
            width -= 1;
        }
        write!(f, "{value:0width$x}")
    }
}

/// Parses lowercase hex digits (no sign, no prefix); `None` on any other byte. At most 16
/// digits, so it fits.
fn parse_lower_hex(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |acc, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(digit))
    })
}

/// Parses an explicit randomness value: exactly 14 lowercase hex digits.
fn parse_randomness(rv: &str) -> Option<u64> {
    if rv.len() == DIGITS {
        parse_lower_hex(rv)
    } else {
        None
    }
}

/// The value of OpenTelemetry sub-key `key` in an `ot` value (`k1:v1;k2:v2`).
fn sub_key<'a>(ot: &'a str, key: &str) -> Option<&'a str> {
    ot.split(';')
        .filter_map(|member| member.split_once(':'))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl TraceState {
    /// The OpenTelemetry sampling threshold (`ot=th:…`), if present and well formed.
    pub fn ot_threshold(&self) -> Option<Threshold> {
        let th = sub_key(self.get(OT)?, "th")?;
        Threshold::parse(th).ok()
    }

    /// Whether the `ot` entry has a `th` sub-key, well formed or not.
    pub(crate) fn has_ot_threshold_key(&self) -> bool {
        self.get(OT).and_then(|ot| sub_key(ot, "th")).is_some()
    }

    /// The OpenTelemetry explicit randomness (`ot=rv:…`), if present and well formed
    /// (exactly 14 lowercase hex digits).
    pub fn ot_randomness(&self) -> Option<u64> {
        parse_randomness(sub_key(self.get(OT)?, "rv")?)
    }

    /// Sets the `th` sub-key of the `ot` entry (first among its sub-keys), or removes it
    /// with `None`; the other sub-keys are kept in order. The `ot` entry moves to the front
    /// like any updated entry, and is removed when nothing is left in it.
    ///
    /// # Errors
    ///
    /// As [`TraceState::insert`] (the `ot` value would break the value grammar or exceed
    /// 256 characters); the state is then unchanged.
    pub fn set_ot_threshold(&mut self, threshold: Option<Threshold>) -> Result<(), Error> {
        let th = threshold.map(|t| t.to_string());
        self.set_ot_sub_key("th", th.as_deref())
    }

    /// Sets the `rv` sub-key of the `ot` entry to the low 56 bits of `randomness`, as a root
    /// sampler does when the trace id is not random.
    ///
    /// # Errors
    ///
    /// As [`TraceState::set_ot_threshold`].
    pub fn set_ot_randomness(&mut self, randomness: u64) -> Result<(), Error> {
        let rv = format!("{:014x}", randomness & ((1u64 << BITS) - 1));
        self.set_ot_sub_key("rv", Some(&rv))
    }

    fn set_ot_sub_key(&mut self, key: &str, value: Option<&str>) -> Result<(), Error> {
        let old = self.get(OT).unwrap_or("");
        let mut ot =
            String::with_capacity(old.len() + value.map_or(0, |v| key.len() + v.len() + 2));
        if let Some(value) = value {
            ot.push_str(key);
            ot.push(':');
            ot.push_str(value);
        }
        let others = old
            .split(';')
            .filter(|member| !member.is_empty())
            .filter(|member| member.split_once(':').is_none_or(|(k, _)| k != key));
        for member in others {
            if !ot.is_empty() {
                ot.push(';');
            }
            ot.push_str(member);
        }
        if ot.is_empty() {
            self.remove(OT);
            Ok(())
        } else {
            self.insert(OT, &ot)
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn th_values_parse_padded_with_zeros() {
        assert_eq!(Threshold::parse("8").unwrap().bits(), 1 << 55);
        assert_eq!(Threshold::parse("0").unwrap(), Threshold::ALWAYS);
        assert_eq!(
            Threshold::parse("ffffffffffffff").unwrap().bits(),
            (1 << 56) - 1
        );
        for bad in ["", "A", "8g", "fffffffffffffff", " 8", "-1", "0x8"] {
            assert!(Threshold::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Threshold::from_bits(1 << 56), None);
        assert_eq!(Threshold::parse("0f").unwrap().to_string(), "0f");
    }

    #[test]
    fn edge_probabilities() {
        assert_eq!(Threshold::from_probability(1.0), Some(Threshold::ALWAYS));
        assert_eq!(Threshold::from_probability(3.0), Some(Threshold::ALWAYS));
        assert_eq!(Threshold::from_probability(0.0), None);
        assert_eq!(Threshold::from_probability(f64::NAN), None);
        assert_eq!(Threshold::from_probability(-1.0), None);
        let tiny = Threshold::from_probability(2f64.powi(-56)).unwrap();
        assert!(tiny.bits() < 1 << 56);
        assert_eq!(Threshold::ALWAYS.probability(), 1.0);
        assert_eq!(Threshold::parse("c").unwrap().adjusted_count(), 4.0);
    }

    #[test]
    fn ot_sub_keys_are_read_and_rewritten_in_place() {
        let mut state = TraceState::parse("a=1,ot=p:8;th:c;k1:13").unwrap();
        assert_eq!(state.ot_threshold(), Threshold::parse("c").ok());
        assert_eq!(state.ot_randomness(), None);
        state.set_ot_threshold(Threshold::parse("8").ok()).unwrap();
        assert_eq!(state.as_str(), "ot=th:8;p:8;k1:13,a=1");
        state.set_ot_randomness(0x6e_6d1a_7583_2a2f).unwrap();
        assert_eq!(state.as_str(), "ot=rv:6e6d1a75832a2f;th:8;p:8;k1:13,a=1");
        state.set_ot_threshold(None).unwrap();
        assert_eq!(state.as_str(), "ot=rv:6e6d1a75832a2f;p:8;k1:13,a=1");
        // Malformed values are ignored, not trusted.
        for header in [
            "ot=th:8g",
            "ot=th:",
            "ot=rv:6e6d1a75832a2",
            "ot=rv:6E6D1A75832A2F",
            "ot=x",
        ] {
            let state = TraceState::parse(header).unwrap();
            assert_eq!(
                (state.ot_threshold(), state.ot_randomness()),
                (None, None),
                "{header}"
            );
        }
        let mut only_th = TraceState::parse("ot=th:0,b=2").unwrap();
        only_th.set_ot_threshold(None).unwrap();
        assert_eq!(only_th.as_str(), "b=2");
    }
}
