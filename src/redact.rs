//! Keeping credentials out of everything the crate prints.
//!
//! A coordinator or a proxy may echo what it was sent in an error body
//! ("invalid token abc…", "user ops with password …"), and that body ends up
//! in [`Error`](crate::Error)'s `Display`, `Debug` and
//! [`body_snippet`](crate::Error::body_snippet), in log events and, through
//! a careless caller, in responses. Every such body goes through
//! [`Redactor::snippet`], the one place secrets are removed: on the raw
//! bytes, before anything is cut, decoded or rewritten.
//!
//! The secrets are every credential the client sends: the bearer token, the
//! API key, every header whose name says it is secret
//! ([`is_secret_header`]) or that was marked secret, a call's own secret
//! headers (UTF-8 or not), and the proxy's `Proxy-Authorization`. Each is
//! looked for in every form an echo may take:
//!
//! - as sent, and trimmed of surrounding whitespace (as the header arrived);
//! - JSON-escaped (minimally, as serde_json does, and with non-ASCII as
//!   `\uXXXX`, as Python's `json.dumps` does);
//! - percent-encoded (RFC 3986 unreserved characters kept, upper- and
//!   lower-case hex; with `/` kept, as Python's `quote`; as a form, with
//!   `+` for space) and percent-decoded (when the secret holds `%XX`);
//! - for `Basic` credentials (RFC 7617), also the base64 text alone, the
//!   decoded `user:password` and the password alone, in each form above;
//! - with its control characters as spaces, as some servers write them;
//! - a non-UTF-8 value also as it decodes lossily (with U+FFFD).
//!
//! A secret cut by the read ([`ERROR_BODY_READ`] bytes) ends the body with a
//! start of one of these forms: any such start is redacted, down to its
//! first character (the only characters ever shown of a cut secret are
//! none). A secret cut by the snippet's length is redacted before the cut,
//! so the cut falls in `[redacted]`, never in the secret.

//!
//! # What is logged, at which level
//!
//! Every event and span goes through `tracing`, target `tower_quality_gate`;
//! no event carries a request body, a credential or a header value other
//! than the request id. Text that comes from the coordinator appears only
//! as an [`Error`](crate::Error)'s `Display`: its status and the body's
//! snippet, at most [`SNIPPET_CHARS`] characters, redacted, on one line
//! (control characters and invisible format characters escaped as `\n`,
//! `\u{1b}`, `\u{202e}`…), so an error body can neither flood the logs nor
//! forge or disguise a line.
//!
//! - **WARN**: the gate fails closed for want of a verdict (the error as
//!   above, its kind, the request id, the status answered); a circuit
//!   breaker opens (replica label, failures, cooldown); a discovery
//!   resolution fails or finds nothing, a discovered replica or a stream
//!   entry is skipped, the stream fails or ends; a `NO_PROXY` entry can
//!   never match.
//! - **INFO**: a breaker half-opens or closes; the spans of a call
//!   (`quality_gate.check`, with task id, agent id and request id) and of
//!   each attempt (`POST`, with the OpenTelemetry HTTP client attributes).
//! - **DEBUG**: each failed attempt (the error as above, whether it is
//!   retryable), each verdict (approval and gate), each retry decision
//!   (`retrying` with the delay, or `not retrying` with the reason), a
//!   resend of a request the coordinator never processed.
//!
//! Nothing is logged at ERROR: the caller owns the error and decides.

use std::fmt;

use http::HeaderName;

/// How much of an error answer's body is read for its snippet (checks and
/// health checks). A body of this length is taken to have been cut by the
/// read, so a secret may end it half-sent.
pub(crate) const ERROR_BODY_READ: usize = 1024;

/// How many characters of an error body an [`Error`](crate::Error) keeps.
pub(crate) const SNIPPET_CHARS: usize = 256;

/// What replaces each secret, and each run of overlapping secrets.
const MARK: &[u8] = b"[redacted]";

/// A value that must never be printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whether a header's value is a credential by its name alone: any name
/// ending in `-key` or `_key`, and any containing `auth` (`authorization`,
/// `proxy-authorization`), `token`, `secret`, `password`, `passwd`,
/// `credential`, `cookie` or `session`.
///
/// Names are compared in lower case, as `HeaderName` stores them.
pub(crate) fn is_secret_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.ends_with("-key")
        || name.ends_with("_key")
        || [
            "auth",
            "token",
            "secret",
            "password",
            "passwd",
            "credential",
            "cookie",
            "session",
        ]
        .iter()
        .any(|word| name.contains(word))
}

/// The parts of a secret header's value to remove: the value, and for an
/// `authorization`-style `Scheme credentials` value the credentials alone,
/// which a coordinator may echo without the scheme.
pub(crate) fn secret_parts(value: &str) -> impl Iterator<Item = &str> {
    let credentials = value
        .trim()
        .split_once([' ', '\t'])
        .map(|(_, rest)| rest.trim())
        .filter(|rest| !rest.is_empty());
    std::iter::once(value).chain(credentials)
}

/// [`secret_parts`] of a value that may not be UTF-8.
fn secret_parts_bytes(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let credentials = value
        .trim_ascii()
        .splitn(2, |&b| b == b' ' || b == b'\t')
        .nth(1)
        .map(<[u8]>::trim_ascii)
        .filter(|rest| !rest.is_empty());
    std::iter::once(value).chain(credentials)
}

/// The secrets of one configuration, in every form a coordinator may echo
/// them in.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Each secret as sent and trimmed, and as it appears inside a JSON
    /// string (escaped minimally, as serde_json does, and with non-ASCII as
    /// `\uXXXX`, as Python's `json.dumps` does); without duplicates.
    raw: Vec<Vec<u8>>,
    /// The same forms as they look once control characters became spaces:
    /// a second pass over the text that is finally shown.
    shown: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor for these secret values (UTF-8 or not); empty ones are
    /// ignored.
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let mut raw = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            raw.extend(forms(secret));
            if let Some((encoded, decoded)) = basic_credentials(secret) {
                // The base64 text, `user:password`, and the password alone.
                raw.extend(forms(encoded));
                if let Some(at) = decoded.iter().position(|&b| b == b':') {
                    raw.extend(forms(&decoded[at + 1..]));
                }
                raw.extend(forms(&decoded));
            }
        }
        raw.retain(|form| !form.is_empty());
        let shown: Vec<Vec<u8>> = raw
            .iter()
            .map(|form| one_line(&String::from_utf8_lossy(form)).into_bytes())
            .collect();
        let mut redactor = Redactor::default();
        redactor.add(raw, shown);
        redactor
    }

    /// Adds forms to look for, kept sorted (longest first) and without
    /// duplicates.
    fn add(&mut self, raw: Vec<Vec<u8>>, shown: Vec<Vec<u8>>) {
        for (forms, more) in [(&mut self.raw, raw), (&mut self.shown, shown)] {
            forms.extend(more);
            forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
            forms.dedup();
        }
    }

    /// This redactor's secrets and those of a call's own headers (names
    /// that [`is_secret_header`] calls secret), or `None` when the call
    /// carries none.
    pub(crate) fn with_call_headers(&self, headers: &http::HeaderMap) -> Option<Redactor> {
        // Every value, UTF-8 or not: a header value may be any visible
        // bytes, and the coordinator may echo them all the same.
        let values: Vec<&[u8]> = headers
            .iter()
            .filter(|(name, _)| is_secret_header(name))
            .flat_map(|(_, value)| secret_parts_bytes(value.as_bytes()))
            .collect();
        if values.is_empty() {
            return None;
        }
        let call = Redactor::new(values);
        let mut merged = self.clone();
        merged.add(call.raw, call.shown);
        Some(merged)
    }

    /// The start of an error body as an error may show it: every secret
    /// replaced by `[redacted]`, then decoded (lossily), on one line
    /// (control and invisible format characters escaped), at most
    /// [`SNIPPET_CHARS`] characters.
    ///
    /// `truncated` says the body was cut by the read: a secret may then end
    /// it half-sent, so a trailing start of any secret is removed as well.
    pub(crate) fn snippet(&self, body: &[u8], truncated: bool) -> String {
        // Secrets go first, on the bytes as received: cutting or rewriting
        // first could split a secret, or turn a tab in it into a space, so
        // that it no longer matches and leaks.
        let scrubbed = replace(body, &cover(body, &self.raw, truncated));
        let text = one_line(&String::from_utf8_lossy(&scrubbed));
        // Decoding and one-lining can make text equal to a secret's
        // one-lined form (a tab sent where the secret has a space); remove
        // those too.
        let text = replace(
            text.as_bytes(),
            &cover(text.as_bytes(), &self.shown, truncated),
        );
        String::from_utf8_lossy(&text)
            .chars()
            .take(SNIPPET_CHARS)
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `text` on one line, as a log line must be: control characters escaped
/// (`\n`, `\r`, `\t`, else `\u{1b}`), and so are the invisible format
/// characters that reorder or hide text in a terminal (bidirectional
/// overrides and isolates, zero-width characters, line and paragraph
/// separators), so an error body can neither forge a log line nor disguise
/// one.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Characters [`one_line`] escapes besides `\n`, `\r` and `\t`.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

/// Marks each byte of `hay` inside an occurrence of any needle (occurrences
/// may overlap) and, when `partial_tail`, inside a start of a needle that
/// ends `hay`.
fn cover(hay: &[u8], needles: &[Vec<u8>], partial_tail: bool) -> Vec<bool> {
    let mut covered = vec![false; hay.len()];
    for needle in needles.iter().filter(|n| !n.is_empty()) {
        if needle.len() <= hay.len() {
            for start in 0..=hay.len() - needle.len() {
                if hay[start..].starts_with(needle) {
                    covered[start..start + needle.len()].fill(true);
                }
            }
        }
        if partial_tail {
            let longest = (needle.len() - 1).min(hay.len());
            if let Some(len) = (1..=longest)
                .rev()
                .find(|&len| hay.ends_with(&needle[..len]))
            {
                covered[hay.len() - len..].fill(true);
            }
        }
    }
    covered
}

/// `hay` with each run of covered bytes replaced by one [`MARK`].
fn replace(hay: &[u8], covered: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut in_run = false;
    for (&byte, &hidden) in hay.iter().zip(covered) {
        if !hidden {
            out.push(byte);
        } else if !in_run {
            out.extend_from_slice(MARK);
        }
        in_run = hidden;
    }
    out
}

/// Every form of one secret an echo may take (see the module docs).
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut bases: Vec<Vec<u8>> = vec![secret.to_vec(), secret.trim_ascii().to_vec()];
    if let Some(decoded) = percent_decoded(secret) {
        bases.push(decoded.trim_ascii().to_vec());
        bases.push(decoded);
    }
    bases.retain(|b| !b.is_empty());
    bases.dedup();
    let mut out = Vec::new();
    for base in bases {
        let text = String::from_utf8_lossy(&base).into_owned();
        for (keep, upper, plus) in [
            ("", true, false),
            ("", false, false),
            ("/", true, false),
            ("", true, true),
        ] {
            out.push(percent_encoded(&base, keep, upper, plus));
        }
        out.push(json_escaped(&text, false).into_bytes());
        out.push(json_escaped(&text, true).into_bytes());
        // A server that writes control characters as spaces.
        if text.chars().any(char::is_control) {
            let spaced: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push(spaced.into_bytes());
        }
        if text.as_bytes() != base.as_slice() {
            out.push(text.into_bytes());
        }
        out.push(base);
    }
    out
}

/// The credentials of a `Basic` authorization value (RFC 7617 §2), as
/// base64 and decoded, when it is one and its base64 decodes.
fn basic_credentials(value: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let value = value.trim_ascii();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = value[6..].trim_ascii();
    let decoded = base64_decoded(encoded).filter(|d| !d.is_empty())?;
    Some((encoded, decoded))
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` if it is not.
fn base64_decoded(text: &[u8]) -> Option<Vec<u8>> {
    let text = text
        .strip_suffix(b"==")
        .or(text.strip_suffix(b"="))
        .unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `bytes` percent-encoded: every byte but RFC 3986's unreserved characters
/// and those of `keep` as `%XX`, and with `plus` a space as `+` (HTML
/// forms).
fn percent_encoded(bytes: &[u8], keep: &str, upper: bool, plus: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// `bytes` with each `%XX` decoded, when it holds one.
fn percent_decoded(bytes: &[u8]) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut any = false;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1..i + 3)
            .and_then(|p| Some((digit(p[0])?, digit(p[1])?)));
        match (bytes[i], pair) {
            (b'%', Some((hi, lo))) => {
                out.push((hi * 16 + lo) as u8);
                any = true;
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    any.then_some(out)
}

/// `s` as it appears between the quotes of a JSON string: `"`, `\` and
/// control characters escaped, and with `ascii` every non-ASCII character as
/// `\uXXXX` (UTF-16, lower-case hex).
fn json_escaped(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        Redactor::new(secrets.iter().copied())
    }

    #[test]
    fn is_capped_and_single_line() {
        let r = redactor(&[]);
        let s = r.snippet(
            format!("line1\nline2{}", "é".repeat(1000)).as_bytes(),
            false,
        );
        assert_eq!(s.chars().count(), SNIPPET_CHARS);
        assert!(!s.contains('\n'));
        assert_eq!(r.snippet(b"\xff\xfe ok", false), "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn secrets_are_replaced_in_every_form() {
        let r = redactor(&["tok\"en\té", "key-1"]);
        for body in [
            "bad token tok\"en\té!",
            r#"{"error":"bad token tok\"en\té!"}"#,
            r#"{"error":"bad token tok\"en\t\u00e9!"}"#,
            "bad token tok\"en é!",
        ] {
            assert_eq!(
                r.snippet(body.as_bytes(), false)
                    .replace("{\"error\":\"", "")
                    .replace("\"}", ""),
                "bad token [redacted]!",
                "{body}"
            );
        }
        assert_eq!(
            r.snippet(b"key-1key-1 and key-1", false),
            "[redacted] and [redacted]"
        );
    }

    #[test]
    fn a_secret_across_the_snippet_cut_is_removed_whole() {
        let r = redactor(&["abcdefgh"]);
        let body = format!("{}abcdefgh tail", "x".repeat(SNIPPET_CHARS - 3));
        let s = r.snippet(body.as_bytes(), false);
        assert!(!s.contains("abc"), "{s}");
        assert!(s.ends_with("[re"), "{s}");
    }

    #[test]
    fn a_secret_cut_by_the_read_is_removed_when_truncated() {
        let r = redactor(&["abcdefgh"]);
        assert_eq!(r.snippet(b"echo abcd", true), "echo [redacted]");
        // Untruncated, a word that happens to start like a secret stays.
        assert_eq!(r.snippet(b"echo abcd", false), "echo abcd");
    }

    #[test]
    fn overlapping_secrets_leave_nothing_of_either() {
        let r = redactor(&["xyz123", "123abc"]);
        assert_eq!(r.snippet(b"<xyz123abc>", false), "<[redacted]>");
    }

    #[test]
    fn basic_credentials_are_secret_decoded_and_encoded() {
        // `ops:p@ss wörd`, as `Proxy-Authorization: Basic` carries it.
        let r = redactor(&["Basic b3BzOnBAc3Mgd8O2cmQ="]);
        for echo in [
            "Basic b3BzOnBAc3Mgd8O2cmQ=",
            "b3BzOnBAc3Mgd8O2cmQ=",
            "ops:p@ss wörd",
            "p@ss wörd",
            "p%40ss%20w%C3%B6rd",
            "p%40ss%20w%c3%b6rd",
            "p%40ss+w%C3%B6rd",
            "p@ss w\\u00f6rd",
        ] {
            let shown = r.snippet(format!("user {echo}!").as_bytes(), false);
            assert_eq!(shown, "user [redacted]!", "{echo}");
        }
        // Not Basic, or not base64: the value alone.
        assert_eq!(basic_credentials(b"Bearer b3BzOnB3"), None);
        assert_eq!(basic_credentials(b"Basic not*base64"), None);
        assert_eq!(base64_decoded(b"b3BzOnB3").unwrap(), b"ops:pw");
    }

    #[test]
    fn percent_forms_both_ways() {
        let r = redactor(&["a/b c%2Fd"]);
        for echo in [
            "a%2Fb%20c%252Fd",
            "a/b%20c%252Fd",
            "a/b c/d",
            "a%2fb%20c%252Fd",
        ] {
            let shown = r.snippet(format!("<{echo}>").as_bytes(), false);
            assert_eq!(shown, "<[redacted]>", "{echo}");
        }
    }

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let r = redactor(&[]);
        let shown = r.snippet(
            "a\nINFO forged\r\x1b[31mred\u{202e}txt\u{200b}\u{2028}".as_bytes(),
            false,
        );
        assert_eq!(
            shown,
            "a\\nINFO forged\\r\\u{1b}[31mred\\u{202e}txt\\u{200b}\\u{2028}"
        );
    }

    #[test]
    fn scheme_and_credentials_are_both_secret() {
        let parts: Vec<&str> = secret_parts("Basic dXNlcjpwdw==").collect();
        assert_eq!(parts, ["Basic dXNlcjpwdw==", "dXNlcjpwdw=="]);
        assert_eq!(secret_parts("plain").collect::<Vec<_>>(), ["plain"]);
    }

    #[test]
    fn secret_header_names() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-coordinator-token",
            "x-api-key",
            "x-client-secret",
            "x-password",
            "x-passwd",
            "x-credentials",
            "x-auth",
            "x-session-id",
        ] {
            assert!(is_secret_header(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-team", "x-request-id", "accept", "x-keyboard"] {
            assert!(!is_secret_header(&HeaderName::from_static(name)), "{name}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Header-valid secrets of at least 9 characters, without `[` or `]`
        /// (so no secret can be read across or inside `[redacted]`): tabs,
        /// quotes, backslashes and unicode included.
        fn secret() -> impl Strategy<Value = String> {
            r#"[A-Za-z0-9\t "\\/+=~.:;,é☃日_-]{9,40}"#
        }

        /// The ways a coordinator echoes a secret: as sent, trimmed (as the
        /// header reached it), or inside a JSON string, escaped either way.
        fn echoed(secret: &str, form: u8) -> Vec<u8> {
            match form {
                0 => secret.as_bytes().to_vec(),
                1 => secret.trim().as_bytes().to_vec(),
                2 => json_escaped(secret, false).into_bytes(),
                _ => json_escaped(secret, true).into_bytes(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn no_snippet_contains_a_secret(
                secret in secret(),
                other in secret(),
                prefix in proptest::collection::vec(any::<u8>(), 0..1100),
                suffix in proptest::collection::vec(any::<u8>(), 0..64),
                form in 0u8..4,
                cut in 0usize..1100,
            ) {
                let r = Redactor::new([secret.as_str(), other.as_str()]);
                let mut body = prefix;
                body.extend(echoed(&secret, form));
                body.extend(suffix);
                // As the read leaves it: whole, or cut at any point.
                let truncated = cut < body.len();
                body.truncate(cut.max(1).min(body.len()));
                let shown = r.snippet(&body, truncated);
                for s in [secret.as_str(), secret.trim()] {
                    prop_assert!(!shown.contains(s), "{shown:?} shows {s:?}");
                }
                prop_assert!(shown.chars().count() <= SNIPPET_CHARS);
                prop_assert!(!shown.chars().any(char::is_control));
            }

            #[test]
            fn a_secret_at_a_truncated_end_leaves_no_start(
                secret in secret(),
                filler in "[a-z ]{0,200}",
                keep in 1usize..40,
            ) {
                let r = Redactor::new([secret.as_str()]);
                let echoed = secret.as_bytes();
                let keep = keep.min(echoed.len() - 1);
                let mut body = filler.into_bytes();
                body.extend_from_slice(&echoed[..keep]);
                let shown = r.snippet(&body, true);
                let start = String::from_utf8_lossy(&echoed[..keep]).trim().to_owned();
                if start.chars().count() >= 2 {
                    prop_assert!(!shown.ends_with(&start), "{shown:?} ends with {start:?}");
                }
            }
        }
    }
}
