//! Listeners, TLS, trusted issuers and upstreams of the server file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::Uri;

use super::limits::bounded;
use super::locate::Step;
use super::{Check, client_tls, defaults, raw};
use crate::policy::{
    Combine, IssuerConfig, KeysSource, ScopesFormat, UpstreamConfig, UpstreamProtocol,
    asymmetric_algorithm, is_loopback,
};

pub(super) fn socket_addr(check: &mut Check<'_>, key: &str, value: &str) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        check.error(
            &[Step::Key("listen"), Step::Key(key)],
            format!("`{value}` is not a listen address"),
            "write an IP and port, like `0.0.0.0:8080` or `[::]:8080`",
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

pub(super) fn tls_config(
    check: &mut Check<'_>,
    base: &Path,
    tls: &raw::Tls,
) -> Option<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = base.join(&tls.cert);
    let key_path = base.join(&tls.key);
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
    {
        Ok(c) if !c.is_empty() => c,
        Ok(_) | Err(_) => {
            check.error(
                &[Step::Key("tls"), Step::Key("cert")],
                format!(
                    "cannot read a PEM certificate chain from `{}`",
                    cert_path.display()
                ),
                "point `tls.cert` at a PEM file with the server certificate first",
            );
            return None;
        }
    };
    let Ok(key) = PrivateKeyDer::from_pem_file(&key_path) else {
        check.error(
            &[Step::Key("tls"), Step::Key("key")],
            format!(
                "cannot read a PEM private key from `{}`",
                key_path.display()
            ),
            "point `tls.key` at a PEM file with a PKCS#8, PKCS#1 or SEC1 private key",
        );
        return None;
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let built = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(Arc::new(config))
        }
        Err(e) => {
            check.error(
                &[Step::Key("tls")],
                format!("the TLS certificate and key do not form a usable pair: {e}"),
                "check that the key belongs to the first certificate of the chain",
            );
            None
        }
    }
}

/// Whether `uri` may be fetched for keys: HTTPS anywhere, plain HTTP only on loopback unless
/// the target says `insecure_http: true`.
pub(super) fn key_url(
    check: &mut Check<'_>,
    path: &[Step<'_>],
    value: &str,
    insecure_http: bool,
) -> Option<Uri> {
    let uri: Uri = match value.parse() {
        Ok(u) => u,
        Err(_) => {
            check.error(
                path,
                format!("`{value}` is not a URL"),
                "write an absolute URL such as `https://idp.example.com/.well-known/jwks.json`",
            );
            return None;
        }
    };
    match uri.scheme_str() {
        Some("https") => Some(uri),
        Some("http") if is_loopback(&uri) || insecure_http => Some(uri),
        Some("http") => {
            check.error(
                path,
                format!("`{value}` fetches keys over plain HTTP"),
                "use https:// (plain http is allowed only for loopback addresses, or with `insecure_http: true` for an in-cluster IdP)",
            );
            None
        }
        _ => {
            check.error(
                path,
                format!("`{value}` is not an http(s) URL"),
                "write an absolute https:// URL",
            );
            None
        }
    }
}

pub(super) fn issuer(
    check: &mut Check<'_>,
    base: &Path,
    name: &str,
    raw: &raw::Issuer,
) -> Option<IssuerConfig> {
    let at = |key: &'static str| [Step::Key("issuers"), Step::Key(name), Step::Key(key)];
    let insecure = raw.insecure_http;
    let keys = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(u), None) => key_url(check, &at("jwks_url"), u, insecure).map(KeysSource::Jwks),
        (None, Some(u)) => {
            key_url(check, &at("discovery_url"), u, insecure).map(KeysSource::Discovery)
        }
        _ => {
            check.error(&[Step::Key("issuers"), Step::Key(name)], format!("issuer `{name}` needs exactly one of `jwks_url` and `discovery_url`"), "set `jwks_url` to the issuer's JWKS, or `discovery_url` to its /.well-known/openid-configuration");
            None
        }
    };
    let mut algorithms = Vec::new();
    for (i, a) in raw
        .algorithms
        .clone()
        .unwrap_or_else(|| vec!["RS256".into(), "ES256".into()])
        .iter()
        .enumerate()
    {
        match asymmetric_algorithm(a) {
            Some(alg) => algorithms.push(alg),
            None => check.error(
                &[Step::Key("issuers"), Step::Key(name), Step::Key("algorithms"), Step::Index(i)],
                format!("algorithm `{a}` is not allowed"),
                "use asymmetric algorithms only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (never `none` or HS*)",
            ),
        }
    }
    if raw.algorithms.as_ref().is_some_and(Vec::is_empty) {
        check.error(
            &at("algorithms"),
            "`algorithms` is empty",
            "list the algorithms this issuer signs with, such as [RS256]",
        );
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        check.error(
            &at("audiences"),
            format!("issuer `{name}` has no audience"),
            "list the `aud` values this gateway accepts; a token for another API must not pass",
        );
    }
    let (scopes_claim, scopes_format) = match &raw.scopes {
        None => ("scope".to_string(), ScopesFormat::Space),
        Some(s) => {
            let format = match s.format {
                Some(raw::ScopesFormat::Space) => ScopesFormat::Space,
                Some(raw::ScopesFormat::Array) => ScopesFormat::Array,
                None if s.claim == "scope" => ScopesFormat::Space,
                None => ScopesFormat::Array,
            };
            (s.claim.clone(), format)
        }
    };
    let config = IssuerConfig {
        name: name.to_string(),
        issuer: raw.issuer.clone(),
        keys: keys?,
        algorithms,
        audiences: raw.audiences.clone(),
        leeway: check.duration(&at("leeway"), raw.leeway.as_deref(), defaults::LEEWAY),
        scopes_claim,
        scopes_format,
        typ: raw.typ.clone(),
        refresh_interval: check.duration(
            &at("refresh_interval"),
            raw.refresh_interval.as_deref(),
            defaults::REFRESH_INTERVAL,
        ),
        unknown_kid_cooldown: check.duration(
            &at("unknown_kid_cooldown"),
            raw.unknown_kid_cooldown.as_deref(),
            defaults::UNKNOWN_KID_COOLDOWN,
        ),
        max_token_age: check.duration(
            &at("max_token_age"),
            raw.max_token_age.as_deref(),
            defaults::MAX_TOKEN_AGE,
        ),
        combine: match raw.combine {
            None | Some(raw::Combine::Intersect) => Combine::Intersect,
            Some(raw::Combine::Replace) => Combine::Replace,
        },
        fetch_timeout: check.duration(
            &at("fetch_timeout"),
            raw.fetch_timeout.as_deref(),
            defaults::FETCH_TIMEOUT,
        ),
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| client_tls(check, base, &[Step::Key("issuers"), Step::Key(name)], t)),
        insecure_http: insecure,
    };
    if config.leeway > defaults::MAX_LEEWAY {
        check.error(
            &at("leeway"),
            "`leeway` is over 5 minutes",
            "clock skew is seconds, not minutes; use 30s or less",
        );
    }
    Some(config)
}

pub(super) fn upstream(
    check: &mut Check<'_>,
    base: &Path,
    name: &str,
    raw: &raw::Upstream,
) -> Option<UpstreamConfig> {
    let at = |key: &'static str| [Step::Key("upstreams"), Step::Key(name), Step::Key(key)];
    let uri: Option<Uri> = raw.url.parse().ok();
    let parts = uri.map(|u| u.into_parts());
    let (Some(scheme), Some(authority), path) = (
        parts
            .as_ref()
            .and_then(|p| p.scheme.clone())
            .filter(|s| *s == http::uri::Scheme::HTTP || *s == http::uri::Scheme::HTTPS),
        parts.as_ref().and_then(|p| p.authority.clone()),
        parts.as_ref().and_then(|p| p.path_and_query.clone()),
    ) else {
        check.error(
            &at("url"),
            format!("`{}` is not an http(s) URL", raw.url),
            "write the upstream's base URL, like `http://127.0.0.1:3000`",
        );
        return None;
    };
    if raw.tls.is_some() && scheme != http::uri::Scheme::HTTPS {
        check.error(
            &at("tls"),
            format!("upstream `{name}` sets `tls` but its URL is plain http"),
            "use an https:// URL, or remove `tls`",
        );
    }
    if path.as_ref().is_some_and(|p| p.query().is_some()) {
        check.error(
            &at("url"),
            "an upstream URL cannot have a query",
            "remove the `?...` part",
        );
    }
    let protocol = protocol(check, &at("protocol"), raw.protocol, &scheme);
    Some(UpstreamConfig {
        name: name.to_string(),
        scheme,
        authority,
        prefix: path
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default(),
        connect_timeout: check.duration(
            &at("connect_timeout"),
            raw.connect_timeout.as_deref(),
            defaults::CONNECT_TIMEOUT,
        ),
        timeout: check.duration(
            &at("timeout"),
            raw.timeout.as_deref(),
            defaults::UPSTREAM_TIMEOUT,
        ),
        audience: raw.audience.clone().unwrap_or_else(|| name.to_string()),
        max_concurrency: bounded(
            check,
            &at("max_concurrency"),
            raw.max_concurrency,
            defaults::UPSTREAM_MAX_CONCURRENCY,
        ),
        folds_case: raw.folds_case,
        folds_trailing_slash: raw.folds_trailing_slash,
        protocol,
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| client_tls(check, base, &[Step::Key("upstreams"), Step::Key(name)], t)),
    })
}

/// An upstream's `protocol`, which must fit its URL: `h2` needs TLS, `h2c` is plain text.
fn protocol(
    check: &mut Check<'_>,
    at: &[Step<'_>],
    raw: Option<raw::Protocol>,
    scheme: &http::uri::Scheme,
) -> UpstreamProtocol {
    let tls = *scheme == http::uri::Scheme::HTTPS;
    match raw {
        None | Some(raw::Protocol::Http1) => UpstreamProtocol::Http1,
        Some(raw::Protocol::Auto) => UpstreamProtocol::Auto,
        Some(raw::Protocol::H2) if !tls => {
            check.error(
                at,
                "`protocol: h2` is HTTP/2 over TLS, but the upstream URL is `http://`",
                "for a plain-text HTTP/2 (gRPC) server use `protocol: h2c`; for TLS write an `https://` URL",
            );
            UpstreamProtocol::H2
        }
        Some(raw::Protocol::H2) => UpstreamProtocol::H2,
        Some(raw::Protocol::H2c) if tls => {
            check.error(
                at,
                "`protocol: h2c` is plain-text HTTP/2, but the upstream URL is `https://`",
                "over TLS use `protocol: h2` (HTTP/2 chosen by ALPN); `h2c` is for `http://` URLs",
            );
            UpstreamProtocol::H2c
        }
        Some(raw::Protocol::H2c) => UpstreamProtocol::H2c,
    }
}

/// The targets that `insecure_http: true` lets scopegate reach over plain http on a
/// non-loopback host, named for the warning and the metric.
pub(super) fn insecure_targets(
    issuers: &[Arc<IssuerConfig>],
    permissions: Option<&raw::Permissions>,
    state: Option<&raw::State>,
) -> Vec<String> {
    let plain = |u: &Uri| u.scheme_str() == Some("http") && !is_loopback(u);
    let issuers = issuers.iter().filter(|i| match &i.keys {
        KeysSource::Jwks(u) | KeysSource::Discovery(u) => i.insecure_http && plain(u),
        KeysSource::Local => false,
    });
    let permissions = permissions.filter(|p| {
        let http = p.insecure_http
            && (p.url.as_deref())
                .and_then(|u| u.parse().ok())
                .is_some_and(|u| plain(&u));
        // Whether or not the host is loopback: the flag says plaintext was asked for.
        http || p.postgres.as_ref().is_some_and(|pg| pg.insecure_plaintext)
    });
    issuers
        .map(|i| format!("issuer/{}", i.name))
        .chain(permissions.map(|_| "permissions".to_string()))
        .chain(
            state
                .filter(|s| s.redis.insecure_plaintext)
                .map(|_| "state".to_string()),
        )
        .collect()
}
