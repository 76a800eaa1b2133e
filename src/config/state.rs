//! `state.redis`: the Redis that replicas share, with TLS wherever someone could sit on the path.

use std::path::Path;

use redis::ConnectionAddr;

use super::locate::Step;
use super::{Check, defaults, raw};
use crate::store::{StoreConfig, WhenUnavailable};

pub(super) fn state(check: &mut Check<'_>, base: &Path, raw: &raw::State) -> Option<StoreConfig> {
    let raw = &raw.redis;
    let at = |key: &'static str| [Step::Key("state"), Step::Key("redis"), Step::Key(key)];
    let timeout = check.duration(
        &at("timeout"),
        raw.timeout.as_deref(),
        defaults::REDIS_TIMEOUT,
    );
    let info = match redis::IntoConnectionInfo::into_connection_info(raw.url.as_str()) {
        Ok(info) => info,
        Err(e) => {
            // The error never repeats the URL: it may hold a password.
            check.error(
                &at("url"),
                format!("not a Redis URL ({})", e.detail().unwrap_or(e.category())),
                "write `redis://host:6379` (loopback), `rediss://host:6380` for TLS, or `redis+unix:///run/redis.sock`",
            );
            return None;
        }
    };
    let (address, tls, local) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (format!("{host}:{port}"), false, is_local(host)),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            if *insecure {
                check.error(
                    &at("url"),
                    "`#insecure` turns off the check of the server's certificate",
                    "remove `#insecure`; give a private CA as `tls: { ca_file: ca.pem }`",
                );
                return None;
            }
            (format!("{host}:{port}"), true, is_local(host))
        }
        ConnectionAddr::Unix(path) => (path.display().to_string(), false, true),
        _ => {
            check.error(
                &at("url"),
                "this kind of Redis address is not supported",
                "write `redis://host:port`, `rediss://host:port` or `redis+unix:///path`",
            );
            return None;
        }
    };
    if !tls && raw.tls.is_some() {
        check.error(
            &at("tls"),
            "`tls` is set but the URL is not `rediss://`",
            "write the URL as `rediss://host:port` to connect with TLS",
        );
        return None;
    }
    if !tls && !local && !raw.insecure_plaintext {
        check.error(
            &at("url"),
            "a Redis host that is not loopback would be reached without TLS",
            "use `rediss://` (with `tls: { ca_file: ... }` for a private CA), or set `insecure_plaintext: true` if the network is trusted",
        );
        return None;
    }
    let client = match raw.tls.as_ref().filter(|_| tls) {
        None => redis::Client::open(info),
        Some(t) => {
            let certificates = certificates(check, base, t)?;
            redis::Client::build_with_tls(info, certificates)
        }
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            check.error(
                &at("url"),
                format!(
                    "cannot set up the Redis client ({})",
                    e.detail().unwrap_or(e.category())
                ),
                "check the URL and the `tls` files",
            );
            return None;
        }
    };
    if raw.insecure_plaintext {
        tracing::warn!(redis = %address, "shared state over plaintext Redis (insecure_plaintext: true): anyone on the path can read and forge revocations");
    }
    Some(StoreConfig {
        client,
        prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| defaults::REDIS_KEY_PREFIX.to_string()),
        timeout,
        idp_tokens_when_unavailable: match raw.idp_tokens_when_unavailable {
            None | Some(raw::WhenUnavailable::Deny) => WhenUnavailable::Deny,
            Some(raw::WhenUnavailable::Allow) => WhenUnavailable::Allow,
        },
        address,
    })
}

fn is_local(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The PEM files of `tls`: Redis's client takes them as bytes. A `ca_file` is trusted alone.
fn certificates(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::ClientTls,
) -> Option<redis::TlsCertificates> {
    let at = |key: &'static str| {
        [
            Step::Key("state"),
            Step::Key("redis"),
            Step::Key("tls"),
            Step::Key(key),
        ]
    };
    if raw.server_name.is_some() || raw.min_version.is_some() {
        check.error(
            &at("server_name"),
            "`server_name` and `min_version` are not supported towards Redis",
            "write the name the server's certificate carries as the URL's host; TLS 1.2 or later is always required",
        );
        return None;
    }
    let mut read = |key: &'static str, file: &Option<String>| match file {
        None => Some(None),
        Some(f) => match std::fs::read(base.join(f)) {
            Ok(bytes) => Some(Some(bytes)),
            Err(e) => {
                check.error(
                    &at(key),
                    format!("cannot read `{f}`: {e}"),
                    "give a PEM file, relative to this file",
                );
                None
            }
        },
    };
    let root_cert = read("ca_file", &raw.ca_file)?;
    let cert = read("client_cert", &raw.client_cert)?;
    let key = read("client_key", &raw.client_key)?;
    let client_tls = match (cert, key) {
        (None, None) => None,
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => {
            check.error(
                &at("client_cert"),
                "`client_cert` and `client_key` go together",
                "give both for mutual TLS, or neither",
            );
            return None;
        }
    };
    Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}
