//! A target's `tls:` block (upstreams, issuers, the permissions API): the CA file added to or
//! replacing the public roots, the client certificate for mutual TLS, the name to check and the
//! lowest version, read and checked at load so a bad file is a `file:line` error, not a failed
//! request.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::locate::Step;
use super::{Check, raw};
use crate::policy::ClientTls;

/// Builds the TLS client settings of the target at `at` (its `tls` key is appended).
pub(super) fn client_tls(
    check: &mut Check<'_>,
    base: &Path,
    at: &[Step<'_>],
    raw: &raw::ClientTls,
) -> Option<ClientTls> {
    let key = |k: &'static str| {
        let mut path = at.to_vec();
        path.extend([Step::Key("tls"), Step::Key(k)]);
        path
    };
    let errors = check.errors.len();
    let mut roots = rustls::RootCertStore::empty();
    if !raw.ca_only {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    match (&raw.ca_file, raw.ca_only) {
        (Some(file), _) => {
            let path = base.join(file);
            let added = certificates(&path).map(|certs| roots.add_parsable_certificates(certs));
            if !matches!(added, Some((valid, _)) if valid > 0) {
                check.error(
                    &key("ca_file"),
                    format!("no CA certificate can be read from `{}`", path.display()),
                    "point `ca_file` at a PEM file of one or more CA certificates (`-----BEGIN CERTIFICATE-----`)",
                );
            }
        }
        (None, true) => check.error(
            &key("ca_only"),
            "`ca_only` without a `ca_file` trusts nothing",
            "add `ca_file`, the PEM file of the CA that signs this target's certificate",
        ),
        (None, false) => {}
    }
    let client = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(cert), Some(k)) => {
            let (cert_path, key_path) = (base.join(cert), base.join(k));
            let chain = certificates(&cert_path).filter(|c| !c.is_empty());
            if chain.is_none() {
                check.error(
                    &key("client_cert"),
                    format!("no certificate can be read from `{}`", cert_path.display()),
                    "point `client_cert` at a PEM file with the client certificate first",
                );
            }
            let private = PrivateKeyDer::from_pem_file(&key_path).ok();
            if private.is_none() {
                check.error(
                    &key("client_key"),
                    format!("no private key can be read from `{}`", key_path.display()),
                    "point `client_key` at a PEM file with a PKCS#8, PKCS#1 or SEC1 private key",
                );
            }
            chain.zip(private)
        }
        (Some(_), None) | (None, Some(_)) => {
            check.error(
                &key(if raw.client_cert.is_some() {
                    "client_cert"
                } else {
                    "client_key"
                }),
                "a client certificate needs both `client_cert` and `client_key`",
                "set both, to the PEM certificate chain and its private key",
            );
            None
        }
    };
    let server_name = raw.server_name.as_ref().and_then(|name| {
        let parsed = ServerName::try_from(name.clone()).ok();
        if parsed.is_none() {
            check.error(
                &key("server_name"),
                format!("`{name}` is not a DNS name or an IP address"),
                "write the name the target's certificate carries, like `api.internal`",
            );
        }
        parsed
    });
    if check.errors.len() > errors {
        return None;
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match raw.min_version {
        Some(raw::TlsVersion::V1_3) => &[&rustls::version::TLS13],
        None | Some(raw::TlsVersion::V1_2) => rustls::DEFAULT_VERSIONS,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let built = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map(|b| b.with_root_certificates(roots))
        .and_then(|b| match client {
            Some((chain, private)) => b.with_client_auth_cert(chain, private),
            None => Ok(b.with_no_client_auth()),
        });
    match built {
        Ok(config) => Some(ClientTls {
            config: Arc::new(config),
            server_name,
        }),
        Err(e) => {
            check.error(
                &key("client_cert"),
                format!("the client certificate and key do not form a usable pair: {e}"),
                "check that `client_key` belongs to the first certificate of `client_cert`",
            );
            None
        }
    }
}

/// The PEM certificates of `path`; `None` when it cannot be read or holds a malformed block.
fn certificates(path: &Path) -> Option<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()
}
