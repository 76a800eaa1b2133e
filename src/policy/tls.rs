//! How scopegate speaks TLS to one target it calls: the roots it trusts, the certificate it
//! presents, the name it checks. Built and checked at load from the target's `tls:` block.

use std::sync::Arc;

use rustls::pki_types::ServerName;

/// A target's TLS client settings. The rustls config carries no ALPN: each client adds the
/// protocols it speaks.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Checked against the target's certificate instead of the URL's host, when set.
    pub server_name: Option<ServerName<'static>>,
}
