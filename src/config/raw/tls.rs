//! The `tls:` blocks: the proxy listener's certificate, and a target's TLS client settings.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// How scopegate connects over TLS to a target it calls (upstream, issuer, permissions API).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientTls {
    /// PEM file of CA certificates trusted for this target, besides the public roots.
    #[serde(default)]
    pub(crate) ca_file: Option<String>,
    /// Trust only `ca_file`, not the public roots.
    #[serde(default)]
    pub(crate) ca_only: bool,
    /// PEM certificate chain scopegate presents (mutual TLS); needs `client_key`.
    #[serde(default)]
    pub(crate) client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub(crate) client_key: Option<String>,
    /// The name the target's certificate must carry, when it is not the URL's host.
    #[serde(default)]
    pub(crate) server_name: Option<String>,
    /// The lowest TLS version accepted (default 1.2).
    #[serde(default)]
    pub(crate) min_version: Option<TlsVersion>,
}

impl ClientTls {
    /// The files it reads, watched for hot reload (certificate rotation).
    pub(crate) fn files(&self) -> impl Iterator<Item = &String> {
        [&self.ca_file, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub(crate) enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}
