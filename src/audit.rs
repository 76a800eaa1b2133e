//! The audit log: one line per decision (target `scopegate::audit`), with what was decided for
//! whom and why. It names tokens only by their `jti` or hash, never by value. Lines are written
//! by [`sink`], off the request path.

use std::sync::Arc;
use std::time::Duration;

use crate::mint::Minted;
use crate::policy::Route;
use crate::principal::Principal;

pub(crate) mod sink;
#[cfg(test)]
mod tests;

/// What the pipeline learned about one request, filled in stage by stage.
#[derive(Debug, Default)]
pub struct Audit<'a> {
    /// The matched route, once matched (its name labels metrics and logs; proxy mode reads its
    /// CORS policy).
    pub matched: Option<&'a Arc<Route>>,
    /// The normalized path, once normalization passed.
    pub path: Option<String>,
    /// The verified caller (subject, and its token's `jti` or hash prefix).
    pub principal: Option<Arc<Principal>>,
    pub organization: Option<String>,
    /// Whether to keep what only `explain` shows (the params): off on the request path.
    pub detailed: bool,
    /// The matched route's path parameters (name, raw value), when `detailed`.
    pub params: Vec<(String, String)>,
    /// The matched route's condition, as written.
    pub condition: Option<&'a str>,
    /// Where the membership answer came from: `given`, `cache`, `backend` or `stale`.
    pub grants: Option<&'static str>,
    /// The effective scopes in the organization (or the token's), once the decision computed
    /// them (an allow, or a scope or condition denial).
    pub effective: Option<Vec<String>>,
    /// The token minted for the upstream (named by its `jti`).
    pub minted: Option<Arc<Minted>>,
}

impl Audit<'_> {
    /// The matched route's name, `none` before or without a match.
    pub fn route_name(&self) -> &str {
        self.matched.map_or("none", |r| r.name.as_str())
    }
}

/// How a request ended, for the audit event.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// `proxy` or `forward_auth`.
    pub mode: &'static str,
    pub method: &'a str,
    pub status: u16,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rejection code, or `allowed`.
    pub reason: &'static str,
    pub latency: Duration,
    /// The W3C `traceparent` of the request, when well-formed.
    pub traceparent: Option<&'a str>,
}

/// A value of an audit line.
enum Field<'a> {
    Str(&'a str),
    Num(u64),
}

impl Audit<'_> {
    /// Writes the audit line, when the log filter lets `scopegate::audit` events through.
    pub fn emit(&self, o: &Outcome<'_>) {
        let Some(format) = sink::format() else { return };
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let principal = self.principal.as_deref();
        let fields = [
            ("mode", Field::Str(o.mode)),
            ("route", Field::Str(self.route_name())),
            ("method", Field::Str(o.method)),
            ("path", Field::Str(self.path.as_deref().unwrap_or(""))),
            ("subject", Field::Str(principal.map_or("", |p| &*p.subject))),
            (
                "organization",
                Field::Str(self.organization.as_deref().unwrap_or("")),
            ),
            ("grants", Field::Str(self.grants.unwrap_or(""))),
            ("decision", Field::Str(o.decision)),
            ("reason", Field::Str(o.reason)),
            ("status", Field::Num(u64::from(o.status))),
            ("token", Field::Str(principal.map_or("", |p| &*p.token_id))),
            (
                "minted_jti",
                Field::Str(self.minted.as_deref().map_or("", |m| m.jti.as_str())),
            ),
            ("latency_us", Field::Num(o.latency.as_micros() as u64)),
            ("traceparent", Field::Str(o.traceparent.unwrap_or(""))),
        ];
        sink::send(line(format, &fields));
    }
}

/// A byte `Debug` writes as itself inside quotes.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// The target audit lines carry (and the log filter matches).
const TARGET: &str = "scopegate::audit";

/// One line in `format`: the same fields, timestamp, level and target as the other log lines.
/// Built with byte pushes rather than `write!`: the formatting machinery was most of the cost
/// of a line (benches/README.md).
fn line(format: sink::Format, fields: &[(&str, Field<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    match format {
        sink::Format::Json => {
            out.extend_from_slice(br#"{"timestamp":""#);
            push_timestamp(&mut out, std::time::SystemTime::now());
            out.extend_from_slice(br#"","level":"INFO","message":"decision""#);
            for (name, value) in fields {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                match value {
                    // A Vec cannot fail a write, and any str has a JSON form.
                    Field::Str(s) => {
                        let _ = serde_json::to_writer(&mut out, s);
                    }
                    Field::Num(n) => push_number(&mut out, *n),
                }
            }
            out.extend_from_slice(br#","target":""#);
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b"\"}\n");
        }
        sink::Format::Text => {
            push_timestamp(&mut out, std::time::SystemTime::now());
            out.extend_from_slice(b"  INFO ");
            out.extend_from_slice(TARGET.as_bytes());
            out.extend_from_slice(b": decision");
            for (name, value) in fields {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                match value {
                    // Most values need no escaping: copied, instead of `Debug`'s char by char.
                    Field::Str(s) if s.bytes().all(plain) => {
                        out.push(b'"');
                        out.extend_from_slice(s.as_bytes());
                        out.push(b'"');
                    }
                    Field::Str(s) => out.extend_from_slice(format!("{s:?}").as_bytes()),
                    Field::Num(n) => push_number(&mut out, *n),
                }
            }
            out.push(b'\n');
        }
    }
    out
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `now` as RFC 3339 with microseconds (`2026-12-06T05:03:14.123456Z`, humantime's form). The
/// date and time of day are formatted once a second per thread.
fn push_timestamp(out: &mut Vec<u8>, now: std::time::SystemTime) {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};
    thread_local! {
        /// The last second formatted, and its text without the trailing `Z`.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs || text.is_empty() {
            let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
            *text = full.to_string();
            text.pop();
            *second = secs;
        }
        out.extend_from_slice(text.as_bytes());
    });
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    out.push(b'.');
    out.extend(std::iter::repeat_n(b'0', 6 - micros.len()));
    out.extend_from_slice(micros.as_bytes());
    out.push(b'Z');
}

/// A `traceparent` header value, if it has the W3C shape (`00-<32 hex>-<16 hex>-<2 hex>`).
pub(crate) fn traceparent(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    let shape = parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()));
    shape.then_some(v)
}
