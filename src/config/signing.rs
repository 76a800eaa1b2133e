//! scopegate's own issuer identity and signing keys.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::locate::Step;
use super::{Check, defaults, raw};
use crate::policy::{Combine, IssuerConfig, KeysSource, ScopesFormat, UpstreamConfig};
use crate::signing::Signing;

pub(super) fn signing(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::Signing,
) -> Option<crate::signing::Signing> {
    let issuer = raw.issuer.trim_end_matches('/').to_string();
    if !matches!(
        issuer
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.scheme_str().map(str::to_string))
            .as_deref(),
        Some("https" | "http")
    ) {
        check.error(&[Step::Key("signing"), Step::Key("issuer")], format!("`{}` is not an http(s) URL", raw.issuer), "set scopegate's public base URL, like `https://gateway.example.com`; upstreams fetch its JWKS under it");
        return None;
    }
    if raw.keys.is_empty() {
        check.error(
            &[Step::Key("signing"), Step::Key("keys")],
            "no signing keys are configured",
            "create one with `scopegate keygen --out keys` and list it here",
        );
        return None;
    }
    let mut keys = Vec::new();
    let mut kids = std::collections::HashSet::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let at = |key: &'static str| {
            [
                Step::Key("signing"),
                Step::Key("keys"),
                Step::Index(i),
                Step::Key(key),
            ]
        };
        if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
            check.error(
                &at("kid"),
                format!("signing key id `{}` is empty or used twice", k.kid),
                "give every key its own `kid`",
            );
            continue;
        }
        let alg = match crate::keys::signing_algorithm(k.alg.as_deref().unwrap_or("ES256")) {
            Ok(a) => a,
            Err(e) => {
                check.error(&at("alg"), e.to_string(), "ES256 is the default");
                continue;
            }
        };
        let key = match (&k.file, k.generate) {
            (Some(file), false) => {
                let path = base.join(file);
                match std::fs::read(&path) {
                    Ok(pem) => {
                        crate::keys::SigningKey::from_pem(k.kid.clone(), alg, &pem).map_err(|e| {
                            (
                                format!("`{}`: {e}", path.display()),
                                "the file must hold a PKCS#8 PEM private key of the key's `alg`",
                            )
                        })
                    }
                    Err(e) => Err((
                        format!("cannot read signing key file `{}`: {e}", path.display()),
                        "create it with `scopegate keygen --out DIR`, or fix the path (relative to the server file)",
                    )),
                }
            }
            (None, true) => {
                tracing::warn!(kid = %k.kid, "signing key generated at start: tokens it signs stop verifying when the process ends; use key files in production");
                crate::keys::SigningKey::generate(k.kid.clone(), alg)
                    .map_err(|e| (e.to_string(), "use a key file instead"))
            }
            _ => Err((
                format!(
                    "signing key `{}` needs exactly one of `file` and `generate: true`",
                    k.kid
                ),
                "point `file` at a PEM key (see `scopegate keygen`); `generate: true` is for development only",
            )),
        };
        match key {
            Ok(key) => keys.push(key),
            Err((message, hint)) => check.error(&at("file"), message, hint),
        }
    }
    (keys.len() == raw.keys.len()).then_some(crate::signing::Signing { issuer, keys })
}

/// scopegate as an issuer of the tokens it mints and exchanges: verified with its own keys.
pub(super) fn own_issuer(
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    signing: &Signing,
    exchange_rules: &[crate::exchange::Rule],
) -> IssuerConfig {
    let mut audiences: Vec<String> = upstreams.values().map(|u| u.audience.clone()).collect();
    audiences.sort();
    audiences.dedup();
    let mut algorithms: Vec<_> = signing.keys.iter().map(|k| k.alg).collect();
    algorithms.dedup();
    IssuerConfig {
        name: "scopegate".into(),
        issuer: signing.issuer.clone(),
        keys: KeysSource::Local,
        algorithms,
        audiences,
        leeway: defaults::LEEWAY,
        scopes_claim: "scope".into(),
        scopes_format: ScopesFormat::Space,
        typ: Some("at+jwt".into()),
        refresh_interval: Duration::from_secs(3600),
        unknown_kid_cooldown: defaults::UNKNOWN_KID_COOLDOWN,
        fetch_timeout: Duration::from_secs(1),
        combine: Combine::Intersect,
        // scopegate's own tokens live as long as the longest exchange rule allows.
        max_token_age: exchange_rules
            .iter()
            .map(|r| r.max_ttl)
            .max()
            .unwrap_or_default()
            .max(defaults::MAX_TOKEN_AGE)
            + Duration::from_secs(60),
        tls: None,
        insecure_http: false,
    }
}
