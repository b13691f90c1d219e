//! The response fields that carry a decision: `RateLimit-Policy` and `RateLimit` as
//! structured fields (draft-ietf-httpapi-ratelimit-headers-11, RFC 9651), the legacy
//! `RateLimit-Limit` / `-Remaining` / `-Reset` triple, and `Retry-After`.

use std::fmt::{self, Write as _};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::QuotaPolicy;
use crate::{Decision, Error};

/// `RateLimit-Policy`: the quota policies that apply to the request (draft 11, §3).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of the quota under a policy (draft 11, §4).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const LEGACY_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const LEGACY_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const LEGACY_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The largest Integer a structured field may carry (RFC 9651 §3.3.1), below 2^53 − 1, so
/// JavaScript clients read it exactly too. Every number of seconds the layer sends (`w`, `t`,
/// `Retry-After`, the legacy reset, the problem body's `retry_after`) is clamped to it, so
/// the fields stay valid and agree with each other whatever a limiter reports.
const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// The seconds to wait that every response field states for `decision`, clamped to one
/// bound; `None` when it was admitted.
pub(crate) fn retry_after_secs(decision: &Decision) -> Option<u64> {
    decision.retry_after_secs().map(sf_integer)
}

/// Which rate-limit fields responses carry. `Retry-After` is on every `429` whatever the
/// style.
///
/// ```
/// use infra_ratelimit::http::HeaderStyle;
///
/// assert_eq!(HeaderStyle::default(), HeaderStyle::Draft11);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderStyle {
    /// `RateLimit-Policy: "default";q=100;w=60` and `RateLimit: "default";r=99;t=1`, the
    /// structured fields of draft-ietf-httpapi-ratelimit-headers-11 (the current draft).
    #[default]
    Draft11,
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, three integers, as
    /// earlier drafts named them and many clients still read them.
    Legacy,
    /// Both of the above.
    Both,
    /// No rate-limit fields (only `Retry-After` on a `429`).
    None,
}

impl HeaderStyle {
    fn draft11(self) -> bool {
        matches!(self, Self::Draft11 | Self::Both)
    }

    fn legacy(self) -> bool {
        matches!(self, Self::Legacy | Self::Both)
    }
}

/// A quota policy's name, as `RateLimit-Policy` and `RateLimit` identify it.
///
/// The draft makes the name a structured-field String: printable ASCII, sent between double
/// quotes with `"` and `\` escaped. Anything else (control characters, non-ASCII, an empty
/// name) is refused with [`Error::InvalidConfig`] rather than altered, so the name a client
/// reads is the name configured.
///
/// ```
/// use infra_ratelimit::http::PolicyName;
///
/// assert_eq!(PolicyName::new("per-ip")?.as_str(), "per-ip");
/// assert_eq!(PolicyName::new(r#"say "hi""#)?.to_string(), r#""say \"hi\"""#);
/// assert!(PolicyName::new("día").is_err());
/// assert!(PolicyName::new("").is_err());
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyName(Box<str>);

impl PolicyName {
    /// Validates `name` (see the type's documentation).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty name or one with a byte outside `0x20..=0x7E`.
    pub fn new(name: &str) -> Result<Self, Error> {
        if name.is_empty() {
            return Err(Error::InvalidConfig {
                reason: "a rate-limit policy name must not be empty",
            });
        }
        if !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Error::InvalidConfig {
                reason: "a rate-limit policy name must be printable ASCII (0x20 to 0x7E)",
            });
        }
        Ok(Self(name.into()))
    }

    /// `default`, the name of a layer's default policy until renamed.
    pub(crate) fn default_policy() -> Self {
        Self("default".into())
    }

    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name as a structured-field String: quoted, with `"` and `\` escaped (RFC 9651 §4.1.6).
impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

/// The `r` and `t` of `RateLimit`: what may be spent now, and the seconds within which no
/// more than that may be spent.
///
/// An admitted request's `t` is the time until the full quota is back (`reset_after`): a
/// client that spends `r` and then waits `t`, or spreads `r` over `t`, is admitted. A denied
/// request's `t` is its `Retry-After`, since the draft asks that `Retry-After` never point
/// before the end of the effective window.
fn remaining_and_window(decision: &Decision) -> (u64, u64) {
    let window = retry_after_secs(decision).unwrap_or_else(|| sf_integer(decision.reset_secs()));
    (u64::from(decision.remaining()), window)
}

fn sf_integer(value: u64) -> u64 {
    value.min(MAX_SF_INTEGER)
}

/// The `RateLimit-Policy` value: `"name";q=<quota>;w=<window>`.
pub(crate) fn policy_field(name: &PolicyName, policy: &QuotaPolicy) -> String {
    format!(
        "{name};q={};w={}",
        policy.quota(),
        sf_integer(policy.window_secs())
    )
}

/// The `RateLimit` value: `"name";r=<remaining>;t=<seconds>`.
pub(crate) fn limit_field(name: &PolicyName, decision: &Decision) -> String {
    let (remaining, window) = remaining_and_window(decision);
    format!("{name};r={remaining};t={window}")
}

/// Writes the fields `style` asks for, and `Retry-After` when `decision` is a denial, into
/// `headers`, replacing any of the same names.
///
/// ```
/// use http::HeaderMap;
/// use infra_common::ManualClock;
/// use infra_ratelimit::http::{HeaderStyle, PolicyName, QuotaPolicy, insert_headers};
/// use infra_ratelimit::{Gcra, Quota, RateLimiter};
///
/// let quota = Quota::per_minute(60)?;
/// let limiter = RateLimiter::gcra(quota, ManualClock::new())?;
/// let decision = limiter.check();
/// let mut headers = HeaderMap::new();
/// let name = PolicyName::new("default")?;
/// insert_headers(&mut headers, HeaderStyle::Draft11, &name, &QuotaPolicy::of::<Gcra>(&quota), &decision);
/// assert_eq!(headers["ratelimit-policy"], r#""default";q=60;w=60"#);
/// assert_eq!(headers["ratelimit"], r#""default";r=59;t=1"#);
/// assert!(headers.get("retry-after").is_none());
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub fn insert_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    name: &PolicyName,
    policy: &QuotaPolicy,
    decision: &Decision,
) {
    if style.draft11() {
        insert_text(headers, RATELIMIT_POLICY, policy_field(name, policy));
        insert_text(headers, RATELIMIT, limit_field(name, decision));
    }
    if style.legacy() {
        headers.insert(LEGACY_LIMIT, HeaderValue::from(decision.limit()));
        headers.insert(LEGACY_REMAINING, HeaderValue::from(decision.remaining()));
        headers.insert(
            LEGACY_RESET,
            HeaderValue::from(sf_integer(decision.reset_secs())),
        );
    }
    if let Some(secs) = retry_after_secs(decision) {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// Inserts a value built from a validated name and integers: printable ASCII only, which
/// every `HeaderValue` accepts.
fn insert_text(headers: &mut HeaderMap, name: HeaderName, text: String) {
    if let Ok(value) = HeaderValue::try_from(text) {
        headers.insert(name, value);
    }
}
