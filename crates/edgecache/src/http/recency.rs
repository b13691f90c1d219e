//! Which of a URL's responses is the more recent (RFC 9111 §4.1, by `Date`), for a record the
//! shared tier offers beside the responses stored here.

use http::HeaderMap;
use http::header::DATE;

use super::freshness::header_date;
use super::keys::VaryKey;

/// Whether a response with fields `headers` and secondary key `vary` is older, by `Date`, than
/// one of `stored` (the secondary key and fields of each response stored for its URL) whose
/// `Vary` names other fields: the origin has changed what it selects on since that response
/// was generated. A response without a readable `Date` counts as older than any dated one.
/// One under the same names as `vary`, or no older, is not a reason.
pub(crate) fn predates_other_vary_names<'a>(
    vary: &VaryKey,
    headers: &HeaderMap,
    stored: impl IntoIterator<Item = (&'a VaryKey, &'a HeaderMap)>,
) -> bool {
    // `None` orders below every date: an undated response is the older one.
    let date = header_date(headers, &DATE);
    stored.into_iter().any(|(other_vary, other_headers)| {
        !other_vary.names_the_same_fields(vary) && header_date(other_headers, &DATE) > date
    })
}

#[cfg(test)]
mod tests {
    use http::header::VARY;

    use super::*;

    /// A response's secondary key and fields: its `Vary` (none if empty) and its `Date`, if
    /// any, for a request with `accept-encoding: gzip`.
    fn response(vary: &str, date: Option<&str>) -> (VaryKey, HeaderMap) {
        let mut headers = HeaderMap::new();
        if !vary.is_empty() {
            headers.insert(VARY, vary.parse().unwrap());
        }
        if let Some(date) = date {
            headers.insert(DATE, date.parse().unwrap());
        }
        let mut request = HeaderMap::new();
        request.insert("accept-encoding", "gzip".parse().unwrap());
        (VaryKey::new(&headers, &request).unwrap(), headers)
    }

    fn predates(record: &(VaryKey, HeaderMap), stored: &[(VaryKey, HeaderMap)]) -> bool {
        predates_other_vary_names(
            &record.0,
            &record.1,
            stored.iter().map(|(vary, headers)| (vary, headers)),
        )
    }

    const EARLIER: &str = "Mon, 07 Dec 2026 03:00:00 GMT";
    const LATER: &str = "Mon, 07 Dec 2026 03:00:10 GMT";

    #[test]
    fn a_response_older_than_one_under_other_vary_names_predates_them() {
        let newer = [response("accept-encoding", Some(LATER))];
        assert!(predates(&response("", Some(EARLIER)), &newer));
        assert!(predates(
            &response("accept-language", Some(EARLIER)),
            &newer
        ));
        // Among several stored responses, one newer is enough.
        let mixed = [
            response("accept-encoding", Some(EARLIER)),
            response("accept-encoding", Some(LATER)),
        ];
        assert!(predates(&response("", Some(EARLIER)), &mixed));
    }

    #[test]
    fn a_response_as_new_or_newer_or_under_the_same_names_does_not() {
        let stored = [response("accept-encoding", Some(EARLIER))];
        assert!(!predates(&response("", Some(EARLIER)), &stored), "as new");
        assert!(!predates(&response("", Some(LATER)), &stored), "newer");
        let newer = [response("accept-encoding", Some(LATER))];
        assert!(
            !predates(&response("Accept-Encoding", Some(EARLIER)), &newer),
            "the same names: the variant it selects is replaced as usual"
        );
        assert!(
            !predates(&response("", Some(EARLIER)), &[]),
            "nothing stored"
        );
    }

    #[test]
    fn an_undated_response_is_older_than_a_dated_one() {
        let dated = [response("accept-encoding", Some(EARLIER))];
        assert!(predates(&response("", None), &dated));
        assert!(predates(&response("", Some("not a date")), &dated));
        let undated = [response("accept-encoding", None)];
        assert!(!predates(&response("", Some(EARLIER)), &undated));
        assert!(!predates(&response("", None), &undated), "neither is older");
    }
}
