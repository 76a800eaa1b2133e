//! The `limits:` and `requests:` sections: size, time and concurrency bounds, validated so
//! that nothing built from them can panic, and what requests may carry.

use std::time::Duration;

use http::Method;

use super::locate::Step;
use super::{Check, defaults, raw};
use crate::policy::Limits;

/// The `limits:` section, each bound checked so that no listener, semaphore or timer built from
/// it can panic at run time.
pub(super) fn limits(check: &mut Check<'_>, raw: &raw::Limits) -> Limits {
    let max_connections = match raw.max_connections {
        None => 10_000,
        Some(n @ 1..=tokio::sync::Semaphore::MAX_PERMITS) => n,
        Some(n) => {
            check.error(
                &[Step::Key("limits"), Step::Key("max_connections")],
                format!(
                    "`max_connections` must be between 1 and {}, not `{n}`",
                    tokio::sync::Semaphore::MAX_PERMITS
                ),
                "each open connection takes one slot; the default is `10000`",
            );
            10_000
        }
    };
    let max_connections_per_peer = match raw.max_connections_per_peer {
        // A small `max_connections` lowers the default rather than failing a file that never
        // mentions the per-peer bound.
        None => max_connections.min(1_000),
        Some(n) if (1..=max_connections).contains(&n) => n,
        Some(n) => {
            check.error(
                &[Step::Key("limits"), Step::Key("max_connections_per_peer")],
                format!(
                    "`max_connections_per_peer` must be between 1 and `max_connections` ({max_connections}), not `{n}`"
                ),
                "it bounds the share of `max_connections` one client IP address may hold",
            );
            max_connections.min(1_000)
        }
    };
    let mut timeout = |name: &str, value: Option<&str>, default: Duration| {
        let path = [Step::Key("limits"), Step::Key(name)];
        let d = check.duration(&path, value, default);
        if d.is_zero() || d > Limits::MAX_TIMEOUT {
            check.error(
                &path,
                format!(
                    "`{name}` must be longer than zero and at most {}, not `{}`",
                    humantime::format_duration(Limits::MAX_TIMEOUT),
                    value.unwrap_or_default()
                ),
                format!(
                    "write a duration like `{}`",
                    humantime::format_duration(default)
                ),
            );
            return default;
        }
        d
    };
    let header_read_timeout = timeout(
        "header_read_timeout",
        raw.header_read_timeout.as_deref(),
        defaults::HEADER_READ_TIMEOUT,
    );
    let idle_timeout = timeout(
        "idle_timeout",
        raw.idle_timeout.as_deref(),
        defaults::IDLE_TIMEOUT,
    );
    let body_read_timeout = timeout(
        "body_read_timeout",
        raw.body_read_timeout.as_deref(),
        defaults::BODY_READ_TIMEOUT,
    );
    Limits {
        max_token_bytes: raw.max_token_bytes.unwrap_or(defaults::MAX_TOKEN_BYTES),
        token_cache_entries: raw
            .token_cache_entries
            .unwrap_or(defaults::TOKEN_CACHE_ENTRIES),
        mint_cache_entries: raw
            .mint_cache_entries
            .unwrap_or(defaults::MINT_CACHE_ENTRIES),
        max_header_bytes: raw.max_header_bytes.unwrap_or(64 * 1024).max(8 * 1024),
        max_connections,
        max_connections_per_peer,
        header_read_timeout,
        idle_timeout,
        body_read_timeout,
        shutdown_grace: check.duration(
            &[Step::Key("limits"), Step::Key("shutdown_grace")],
            raw.shutdown_grace.as_deref(),
            defaults::SHUTDOWN_GRACE,
        ),
    }
}

/// The largest concurrency bound accepted: far above any real need, far below what would make
/// a semaphore panic.
pub(super) const MAX_CONCURRENCY: usize = 1_000_000;

/// A concurrency bound from 1 to [`MAX_CONCURRENCY`], else an error (and `default`).
pub(super) fn bounded(
    check: &mut Check<'_>,
    at: &[Step<'_>],
    value: Option<usize>,
    default: usize,
) -> usize {
    match value {
        None => default,
        Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
        Some(n) => {
            check.error(
                at,
                format!("`{n}` is not a usable concurrency bound"),
                format!("write a number from 1 to {MAX_CONCURRENCY}; the default is {default}"),
            );
            default
        }
    }
}

/// `m` as a method, when it is an upper-case method token (as clients send methods).
pub(super) fn upper_method(m: &str) -> Option<Method> {
    Method::from_bytes(m.as_bytes()).ok().filter(|_| {
        m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    })
}

pub(super) fn requests(
    check: &mut Check<'_>,
    raw: Option<&raw::Requests>,
) -> crate::inbound::RequestRules {
    let mut rules = crate::inbound::RequestRules::default();
    let Some(raw) = raw else { return rules };
    let at = |key: &'static str, i: usize| [Step::Key("requests"), Step::Key(key), Step::Index(i)];
    for (i, m) in raw.extension_methods.iter().enumerate() {
        match upper_method(m) {
            Some(method) => rules.extension_methods.push(method),
            None => check.error(
                &at("extension_methods", i),
                format!("`{m}` is not an upper-case method token"),
                "write the method as clients send it, in upper case, like `PROPFIND`",
            ),
        }
    }
    let header = |check: &mut Check<'_>, key: &'static str, i: usize, name: &str| {
        let parsed = http::HeaderName::from_bytes(name.as_bytes()).ok();
        if parsed.is_none() {
            check.error(
                &at(key, i),
                format!("`{name}` is not a header name"),
                "write a header name like `x-http-method-override`",
            );
        }
        parsed
    };
    for (i, name) in raw.keep_headers.iter().enumerate() {
        if let Some(h) = header(check, "keep_headers", i, name) {
            if !rules.strip_headers.contains(&h) {
                check.error(
                    &at("keep_headers", i),
                    format!("`{name}` is not stripped by default"),
                    format!(
                        "only these are: {}",
                        crate::inbound::DEFAULT_STRIPPED.join(", ")
                    ),
                );
            }
            rules.strip_headers.retain(|s| *s != h);
        }
    }
    for (i, name) in raw.strip_headers.iter().enumerate() {
        if let Some(h) = header(check, "strip_headers", i, name) {
            rules.strip_headers.push(h);
        }
    }
    if let Some(n) = raw.max_header_count {
        if n == 0 || n > 10_000 {
            check.error(
                &[Step::Key("requests"), Step::Key("max_header_count")],
                format!("`{n}` is not a usable header count"),
                "write a number from 1 to 10000; the default is 100",
            );
        } else {
            rules.max_header_count = n;
        }
    }
    rules
}
