//! `Cache-Control` parsing against a model written from RFC 9111 §5.2 and §1.2.2: random
//! directive lists, rendered with random letter case, quoting and whitespace, split over
//! random field lines, parse to what the model says.

use http::{HeaderMap, HeaderValue};
use infra_edgecache::http::{CacheControl, Delta};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Directive {
    /// A delta-seconds directive: its name and value.
    Delta(&'static str, u64),
    /// A directive without a value.
    Flag(&'static str),
    /// An unknown directive, with an optional token value.
    Extension(String, Option<String>),
}

// `prop_oneof!` expands to a `std` `Arc`.
#[allow(clippy::disallowed_types)]
fn directive() -> impl Strategy<Value = Directive> {
    let delta_names = prop::sample::select(vec![
        "max-age",
        "s-maxage",
        "min-fresh",
        "stale-while-revalidate",
        "stale-if-error",
    ]);
    let flags = prop::sample::select(vec![
        "no-cache",
        "no-store",
        "no-transform",
        "only-if-cached",
        "must-revalidate",
        "proxy-revalidate",
        "must-understand",
        "private",
        "public",
        "immutable",
    ]);
    prop_oneof![
        (delta_names, prop_oneof![0u64..100, 0u64..10_000_000_000])
            .prop_map(|(n, v)| Directive::Delta(n, v)),
        flags.prop_map(Directive::Flag),
        ("x-[a-z]{1,6}", prop::option::of("[a-z0-9]{1,5}"))
            .prop_map(|(n, v)| Directive::Extension(n, v)),
    ]
}

/// One directive as text: random case of the name, the value quoted or not.
fn render(directive: &Directive, upper: bool, quote: bool) -> String {
    let case = |name: &str| {
        if upper {
            name.to_ascii_uppercase()
        } else {
            name.to_owned()
        }
    };
    let value = |text: String| if quote { format!("\"{text}\"") } else { text };
    match directive {
        Directive::Delta(name, seconds) => format!("{}={}", case(name), value(seconds.to_string())),
        Directive::Flag(name) => case(name),
        Directive::Extension(name, None) => case(name),
        Directive::Extension(name, Some(v)) => format!("{}={}", case(name), value(v.clone())),
    }
}

/// §1.2.2: delta-seconds beyond 2^31 read as 2^31.
fn saturated(seconds: u64) -> u32 {
    u32::try_from(seconds.min(1 << 31)).unwrap()
}

/// The model's reading of one delta directive over all its occurrences (§4.2.1 duplicates:
/// disagreeing lifetimes are invalid; windows take the smaller, min-fresh the larger).
fn model_delta(directives: &[Directive], wanted: &str) -> Option<Delta> {
    let values: Vec<u32> = directives
        .iter()
        .filter_map(|d| match d {
            Directive::Delta(name, seconds) if *name == wanted => Some(saturated(*seconds)),
            _ => None,
        })
        .collect();
    let first = *values.first()?;
    Some(match wanted {
        "max-age" | "s-maxage" if values.iter().all(|v| *v == first) => Delta::Seconds(first),
        "max-age" | "s-maxage" => Delta::Invalid,
        "min-fresh" => Delta::Seconds(*values.iter().max().unwrap()),
        _ => Delta::Seconds(*values.iter().min().unwrap()),
    })
}

fn has_flag(directives: &[Directive], wanted: &str) -> bool {
    directives
        .iter()
        .any(|d| matches!(d, Directive::Flag(name) if *name == wanted))
}

proptest! {
    #[test]
    fn parsing_matches_the_model(
        directives in prop::collection::vec(directive(), 0..12),
        renderings in prop::collection::vec((any::<bool>(), any::<bool>(), 0usize..3, any::<bool>()), 12),
    ) {
        // Join with commas and random optional whitespace; start a new field line at random.
        let mut lines = vec![String::new()];
        for (directive, &(upper, quote, spaces, new_line)) in directives.iter().zip(&renderings) {
            let text = render(directive, upper, quote);
            let line = lines.last_mut().unwrap();
            if new_line && !line.is_empty() {
                lines.push(text);
            } else {
                if !line.is_empty() {
                    line.push_str(&" ".repeat(spaces));
                    line.push(',');
                    line.push_str(&" ".repeat(spaces));
                }
                line.push_str(&text);
            }
        }
        let mut headers = HeaderMap::new();
        for line in &lines {
            headers.append("cache-control", HeaderValue::from_str(line).unwrap());
        }
        let cc = CacheControl::from_headers(&headers);

        prop_assert_eq!(cc.max_age(), model_delta(&directives, "max-age"));
        prop_assert_eq!(cc.s_maxage(), model_delta(&directives, "s-maxage"));
        prop_assert_eq!(cc.min_fresh(), model_delta(&directives, "min-fresh"));
        prop_assert_eq!(cc.stale_while_revalidate(), model_delta(&directives, "stale-while-revalidate"));
        prop_assert_eq!(cc.stale_if_error(), model_delta(&directives, "stale-if-error"));
        prop_assert_eq!(cc.no_cache(), has_flag(&directives, "no-cache"));
        prop_assert_eq!(cc.no_store(), has_flag(&directives, "no-store"));
        prop_assert_eq!(cc.no_transform(), has_flag(&directives, "no-transform"));
        prop_assert_eq!(cc.only_if_cached(), has_flag(&directives, "only-if-cached"));
        prop_assert_eq!(cc.must_revalidate(), has_flag(&directives, "must-revalidate"));
        prop_assert_eq!(cc.proxy_revalidate(), has_flag(&directives, "proxy-revalidate"));
        prop_assert_eq!(cc.must_understand(), has_flag(&directives, "must-understand"));
        prop_assert_eq!(cc.private(), has_flag(&directives, "private"));
        prop_assert_eq!(cc.public(), has_flag(&directives, "public"));
        prop_assert_eq!(cc.immutable(), has_flag(&directives, "immutable"));
        let extensions: Vec<(String, Option<String>)> = directives
            .iter()
            .filter_map(|d| match d {
                Directive::Extension(name, value) => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect();
        let parsed: Vec<(String, Option<String>)> = cc
            .extensions()
            .map(|(name, value)| (name.to_owned(), value.map(str::to_owned)))
            .collect();
        prop_assert_eq!(parsed, extensions);
        prop_assert!(!cc.exceeded_limits());
    }
}
