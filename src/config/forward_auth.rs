//! The forward-auth listener's trusted peers and ingress convention.

use super::locate::Step;
use super::{Check, raw};

pub(super) fn forward_auth(
    check: &mut Check<'_>,
    raw: Option<&raw::ForwardAuth>,
) -> crate::forward_auth::ForwardAuthConfig {
    let mut config = crate::forward_auth::ForwardAuthConfig::default();
    let Some(raw) = raw else { return config };
    if let Some(peers) = &raw.trusted_peers {
        config.trusted_peers = peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let parsed = p
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                if parsed.is_err() {
                    check.error(
                        &[
                            Step::Key("forward_auth"),
                            Step::Key("trusted_peers"),
                            Step::Index(i),
                        ],
                        format!("`{p}` is not an IP network"),
                        "write a CIDR like `10.0.0.0/8` or an address like `127.0.0.1`",
                    );
                }
                parsed.ok()
            })
            .collect();
    }
    use crate::forward_auth::Convention;
    config.convention = match raw.convention {
        None | Some(raw::Convention::Nginx) => Some(Convention::Nginx),
        Some(raw::Convention::Auto) => None,
        Some(raw::Convention::IngressNginx) => Some(Convention::IngressNginx),
        Some(raw::Convention::Traefik | raw::Convention::Caddy) => Some(Convention::Traefik),
        Some(raw::Convention::Envoy) => Some(Convention::Envoy),
    };
    if let Some(prefix) = &raw.envoy_prefix {
        if !prefix.starts_with('/')
            || prefix.ends_with('/')
            || crate::normalize::normalize(prefix).as_deref() != Ok(prefix.as_str())
        {
            check.error(
                &[Step::Key("forward_auth"), Step::Key("envoy_prefix")],
                format!("`{prefix}` is not a path prefix"),
                "write a prefix like `/envoy`, matching Envoy's ext_authz `path_prefix`",
            );
        }
        config.envoy_prefix = prefix.clone();
    }
    config
}
