//! Reading the OpenTelemetry SDK environment variables, for every part of the crate that takes
//! settings from them. An empty value counts as unset (as the specification says); a malformed
//! one is an error naming the variable, never a silent default.

use std::ops::RangeInclusive;

use crate::export::ExportError;

/// Where variables are read from: the process environment, or a test's map.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of `name`, unless it is unset or blank.
pub(crate) fn value(lookup: Lookup<'_>, name: &str) -> Option<String> {
    lookup(name).filter(|value| !value.trim().is_empty())
}

/// The first of `names` that is set, with its value: a specific variable listed before the
/// general one it overrides.
pub(crate) fn first(lookup: Lookup<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|&name| value(lookup, name).map(|value| (name, value)))
}

/// `value` of the variable `name` as a decimal integer within `range`; `unit` names what it
/// counts, for the error.
///
/// # Errors
///
/// [`ExportError::InvalidConfig`] naming the variable for anything but decimal digits (a sign
/// included: `u64::from_str` would take a leading `+`, which the specification's integer does
/// not have) or a number outside `range`.
pub(crate) fn integer(
    name: &'static str,
    value: &str,
    range: RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ExportError> {
    Some(value.trim())
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .filter(|number| range.contains(number))
        .ok_or_else(|| {
            ExportError::invalid(
                name,
                format!(
                    "{value:?}: expected {unit} from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// [`integer`] for a count of things (spans, attributes) of at least `min`.
pub(crate) fn count(name: &'static str, value: &str, min: u64) -> Result<usize, ExportError> {
    let number = integer(name, value, min..=u64::MAX, "a count")?;
    usize::try_from(number)
        .map_err(|_| ExportError::invalid(name, format!("{value:?}: too large a count")))
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn integers_are_decimal_digits_within_the_range() {
        assert_eq!(integer("V", " 42 ", 1..=100, "ms"), Ok(42));
        for bad in [
            "0",
            "101",
            "+5",
            "-5",
            "4.2",
            "1e3",
            "ten",
            "99999999999999999999999",
        ] {
            assert_eq!(
                integer("V", bad, 1..=100, "ms"),
                Err(ExportError::invalid(
                    "V",
                    format!("{bad:?}: expected ms from 1 to 100")
                )),
            );
        }
    }

    #[test]
    fn a_blank_value_is_unset_and_the_first_set_name_wins() {
        let lookup = |name: &str| match name {
            "BLANK" => Some(" ".to_owned()),
            "SET" => Some("1".to_owned()),
            _ => None,
        };
        assert_eq!(value(&lookup, "BLANK"), None);
        assert_eq!(
            first(&lookup, &["UNSET", "BLANK", "SET"]),
            Some(("SET", "1".to_owned()))
        );
    }
}
