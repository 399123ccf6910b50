//! Credentials never reach the log, an error message or `--check-config`
//! output (docs/ARCHITECTURE.md "Secrets"). The cache options hold them in
//! [`Secret`] and [`SecretUrl`], whose `Display` and `Debug` hide them, and
//! text that may quote a URL or a connection string (a client library's
//! error message) goes through [`redact`], the one rule for finding them.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// What stands for a hidden credential in anything printed.
pub const REDACTED: &str = "***";

/// A credential (a `password` option): printed as [`REDACTED`], whether
/// with `{}` or `{:?}`; only [`Secret::expose`] gives the text, for the
/// code that authenticates with it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The credential itself: pass it to the client library, never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL that may carry a credential (`redis://:PASSWORD@host/0`): printed
/// through [`redact`]; only [`SecretUrl::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> SecretUrl {
        SecretUrl(text.into())
    }

    /// The URL itself: pass it to the client library, never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

/// True for a parameter name that holds a credential (`password`,
/// `sslpassword`, `passwd`, `auth_token`, ...): judged broadly, since
/// hiding a harmless value costs nothing.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "pwd" || ["pass", "secret", "token"].iter().any(|k| key.contains(k))
}

/// `text` with every credential it quotes replaced by [`REDACTED`]:
///
/// - in each URL (`scheme://...`, up to whitespace), the
///   password of the user information, which runs to the last `@` (a
///   password with an unencoded `/`, `?`, `#` or `@` is hidden whole), and
///   the value of each query parameter [`is_secret_key`] names
///   (`?password=...`, libpq and redis-py);
/// - outside URLs, the value of each `key=value` pair whose key
///   [`is_secret_key`] names (libpq's keyword form, PostgreSQL
///   documentation "Connection Strings"): a quoted value up to its closing
///   quote (`\` escapes), else up to whitespace.
///
/// Text without credentials comes back borrowed and unchanged. A user name
/// stays: it tells which account, and is not a secret.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut hide = Vec::new();
    let urls = url_bodies(text);
    for body in &urls {
        url_credentials(text, body.clone(), &mut hide);
    }
    keyword_credentials(text, &urls, &mut hide);
    if hide.is_empty() {
        return Cow::Borrowed(text);
    }
    hide.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for range in hide {
        if range.start < done {
            // Overlaps the span just hidden: hide the rest of it too.
            done = done.max(range.end);
            continue;
        }
        out.push_str(text.get(done..range.start).unwrap_or_default());
        out.push_str(REDACTED);
        done = range.end;
    }
    out.push_str(text.get(done..).unwrap_or_default());
    Cow::Owned(out)
}

/// The byte ranges of what follows each `://`, up to where the URL ends.
fn url_bodies(text: &str) -> Vec<Range<usize>> {
    let mut bodies = Vec::new();
    let mut from = 0;
    while let Some(at) = text.get(from..).and_then(|rest| rest.find("://")) {
        let start = from + at + 3;
        let rest = text.get(start..).unwrap_or_default();
        let end = start + rest.find(char::is_whitespace).unwrap_or(rest.len());
        bodies.push(start..end);
        from = end.max(start);
    }
    bodies
}

/// The password of the user information and the secret query values of
/// the URL body `body`.
fn url_credentials(text: &str, body: Range<usize>, hide: &mut Vec<Range<usize>>) {
    let url = text.get(body.clone()).unwrap_or_default();
    let host_from = match url.rfind('@') {
        Some(at) => {
            if let Some(colon) = url.get(..at).and_then(|info| info.find(':')) {
                if colon + 1 < at {
                    hide.push(body.start + colon + 1..body.start + at);
                }
            }
            at + 1
        }
        None => 0,
    };
    let after_host = url.get(host_from..).unwrap_or_default();
    let Some(question) = after_host.find('?') else {
        return;
    };
    let query_start = body.start + host_from + question + 1;
    let query = text.get(query_start..body.end).unwrap_or_default();
    let query = query.split('#').next().unwrap_or_default();
    let mut offset = query_start;
    for param in query.split('&') {
        if let Some((key, value)) = param.split_once('=') {
            let key = super::percent::decode(key).unwrap_or_else(|| key.to_owned());
            if is_secret_key(&key) && !value.is_empty() {
                let value_start = offset + param.len() - value.len();
                hide.push(value_start..offset + param.len());
            }
        }
        offset += param.len() + 1;
    }
}

/// Whether `c` may be part of a parameter name.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The values of secret `key=value` pairs outside the URL bodies `urls`.
fn keyword_credentials(text: &str, urls: &[Range<usize>], hide: &mut Vec<Range<usize>>) {
    for (eq, _) in text.match_indices('=') {
        if urls.iter().any(|u| u.contains(&eq)) {
            continue;
        }
        let before = text.get(..eq).unwrap_or_default().trim_end();
        let key_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_key_char(*c))
            .last()
            .map_or(before.len(), |(i, _)| i);
        let key = before.get(key_start..).unwrap_or_default();
        if key.is_empty() || !is_secret_key(key) {
            continue;
        }
        let after = text.get(eq + 1..).unwrap_or_default();
        let value_start = eq + 1 + (after.len() - after.trim_start().len());
        if let Some(value) = value_span(text.get(value_start..).unwrap_or_default()) {
            hide.push(value_start + value.start..value_start + value.end);
        }
    }
}

/// Within `rest` (which starts with a value), the span to hide: inside the
/// quotes of a quoted value (to the end if unterminated), else up to
/// whitespace; `\` escapes the next character. `None` for an empty value.
fn value_span(rest: &str) -> Option<Range<usize>> {
    let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'));
    let start = quote.map_or(0, char::len_utf8);
    let mut chars = rest.char_indices().skip(usize::from(quote.is_some()));
    let mut end = rest.len();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if Some(c) == quote || (quote.is_none() && c.is_whitespace()) {
            end = i;
            break;
        }
    }
    (end > start).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn hides(text: &str, want: &str) {
        assert_eq!(redact(text), want, "redact({text:?})");
    }

    #[test]
    fn url_user_information() {
        hides(
            "redis://:hunter2@127.0.0.1:6379/0",
            "redis://:***@127.0.0.1:6379/0",
        );
        hides(
            "rediss://mta:p%40ss%3Aw@redis.example:6380/2",
            "rediss://mta:***@redis.example:6380/2",
        );
        hides(
            "postgresql://mta:pw@db1:5433,[::1]:5434/mta?sslmode=verify-full",
            "postgresql://mta:***@db1:5433,[::1]:5434/mta?sslmode=verify-full",
        );
        // Unencoded delimiters in the password: hidden whole, whatever a
        // URL parser would make of them.
        hides("redis://:a/b?c#d@e@host/0", "redis://:***@host/0");
        // A user name alone is no secret.
        hides(
            "postgres://user@%2Frun%2Fpostgresql/user",
            "postgres://user@%2Frun%2Fpostgresql/user",
        );
    }

    #[test]
    fn url_query_parameters() {
        hides(
            "postgresql://db/mta?user=u&password=s3cret&sslmode=require",
            "postgresql://db/mta?user=u&password=***&sslmode=require",
        );
        hides(
            "redis://h:6379/0?Password=x#frag",
            "redis://h:6379/0?Password=***#frag",
        );
        hides(
            "postgresql://db/mta?pass%77ord=x",
            "postgresql://db/mta?pass%77ord=***",
        );
        hides(
            "unix:///run/redis.sock?db=2&password=x",
            "unix:///run/redis.sock?db=2&password=***",
        );
    }

    #[test]
    fn keyword_pairs() {
        hides(
            r"host=/tmp port = 5433 password='it\'s a secret' user=mta",
            r"host=/tmp port = 5433 password='***' user=mta",
        );
        hides("password = pw dbname=x", "password = *** dbname=x");
        hides(r"sslpassword=a\ b user=u", "sslpassword=*** user=u");
        hides("password='never closed user=u", "password='***");
        hides(
            r#"auth failed: password="x y""#,
            r#"auth failed: password="***""#,
        );
    }

    #[test]
    fn urls_inside_messages() {
        hides(
            "cannot open \"redis://u:pw@127.0.0.1:1/0\": refused; retry redis://:pw2@h/1",
            "cannot open \"redis://u:***@127.0.0.1:1/0\": refused; retry redis://:***@h/1",
        );
    }

    #[test]
    fn nothing_to_hide_is_borrowed() {
        for text in [
            "redis://127.0.0.1:6379/0",
            "unix:///run/redis.sock",
            "host=/run/postgresql dbname=mta sslmode=require",
            "postgres cache mta@db:5432/mta: connection refused",
            "password=",
            "=x",
            "",
        ] {
            assert!(
                matches!(redact(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn secret_types_print_no_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        let u = SecretUrl::new("redis://:hunter2@h/0");
        assert_eq!(
            format!("{u} {u:?}"),
            "redis://:***@h/0 \"redis://:***@h/0\""
        );
        assert_eq!(u.expose(), "redis://:hunter2@h/0");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = redact(&s);
        }

        /// Whatever the password (printable, any delimiters), neither the
        /// URL nor the keyword form shows it.
        #[test]
        fn password_never_shown(pw in "[!-~]{6,20}", user in "[a-z]{0,6}") {
            // Six printable characters never occur by chance in the rest.
            prop_assume!(!"redis://:@127.0.0.1:6379/0".contains(&pw));
            let url = format!("redis://{user}:{pw}@127.0.0.1:6379/0");
            prop_assert!(!redact(&url).contains(&pw), "{}", redact(&url));
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            let dsn = format!("host=db password='{quoted}' user={user}");
            prop_assert!(!redact(&dsn).contains(&pw), "{}", redact(&dsn));
            let encoded: String = pw.bytes().map(|b| format!("%{b:02X}")).collect();
            let query = format!("postgresql://db/mta?password={encoded}&sslmode=require");
            prop_assert!(!redact(&query).contains(&encoded));
        }
    }
}
