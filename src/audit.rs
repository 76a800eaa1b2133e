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
fn line(format: sink::Format, fields: &[(&str, Field<'_>)]) -> Vec<u8> {
    use std::io::Write;
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    let mut out = Vec::with_capacity(512);
    // Writes into a Vec cannot fail; a string serde_json cannot escape does not exist.
    match format {
        sink::Format::Json => {
            let _ = write!(
                out,
                r#"{{"timestamp":"{now}","level":"INFO","message":"decision""#
            );
            for (name, value) in fields {
                let _ = write!(out, r#","{name}":"#);
                let _ = match value {
                    Field::Str(s) => serde_json::to_writer(&mut out, s).map_err(|_| ()),
                    Field::Num(n) => write!(out, "{n}").map_err(|_| ()),
                };
            }
            let _ = writeln!(out, r#","target":"{TARGET}"}}"#);
        }
        sink::Format::Text => {
            let _ = write!(out, "{now}  INFO {TARGET}: decision");
            for (name, value) in fields {
                let _ = match value {
                    // Most values need no escaping: copied, instead of `Debug`'s char by char.
                    Field::Str(s) if s.bytes().all(plain) => write!(out, " {name}=\"{s}\""),
                    Field::Str(s) => write!(out, " {name}={s:?}"),
                    Field::Num(n) => write!(out, " {name}={n}"),
                };
            }
            let _ = writeln!(out);
        }
    }
    out
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
