//! Configuration: reads `scopegate.yaml` and its policy files, validates everything, and produces
//! the typed [`Config`] that request-time code uses without re-checking anything.

mod error;
mod locate;
mod raw;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

pub use crate::policy::{
    Combine, IssuerConfig, KeysSource, Limits, Roles, ScopesFormat, UpstreamConfig,
    asymmetric_algorithm, is_loopback,
};
pub use error::{ConfigError, ConfigErrors};
use locate::{Locator, Step};

use crate::route::{Access, Route, RouteTable, ScopeRule};

/// A whole validated configuration: the server file plus every policy file.
#[derive(Debug)]
pub struct Config {
    pub listen: Listen,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub issuers: Vec<Arc<IssuerConfig>>,
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    pub routes: RouteTable,
    pub limits: Limits,
    pub signing: Arc<crate::mint::Signing>,
    pub permissions: Option<PermissionsConfig>,
    /// Role name to the scopes it grants, from every policy file.
    pub roles: Roles,
    /// Token exchange, when clients are configured.
    pub exchange: Option<Arc<crate::exchange::ExchangeConfig>>,
    pub forward_auth: crate::forward_auth::ForwardAuthConfig,
    /// Methods accepted and headers stripped before forwarding.
    pub requests: crate::inbound::RequestRules,
    /// Files and folders whose change triggers a reload (empty for configs built from text).
    pub watched: Vec<PathBuf>,
    pub log: LogConfig,
    /// Policy tests from every policy file, run by `scopegate check`.
    pub tests: Vec<crate::described::PolicyTest>,
}

/// Logging: format and default filter (applied at start; `RUST_LOG` wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub json: bool,
    pub level: String,
}

/// The permissions backend and its cache settings.
#[derive(Debug, Clone)]
pub struct PermissionsConfig {
    pub backend: Arc<dyn crate::permissions::Backend>,
    pub cache: crate::permissions::CacheConfig,
}

/// Listener addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The forward-auth decision listener, when configured.
    pub auth: Option<SocketAddr>,
}

/// A file's name and text, so tests and `scopegate dev` can load configuration from strings.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        std::fs::read_to_string(path)
            .map(|text| Self {
                path: path.to_path_buf(),
                text,
            })
            .map_err(|e| {
                ConfigError::new(path, format!("cannot read file: {e}")).hint(
                    "check the path; relative paths are resolved from the server file's folder",
                )
            })
    }
}

/// The JSON Schemas of the three file kinds, for editors (yaml-language-server) and CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// `scopegate.yaml`.
    Server,
    /// `policies/*.yaml`.
    Policy,
    /// Permissions data files of the `file` backend.
    Data,
}

/// The JSON Schema of one file kind.
pub fn schema(kind: SchemaKind) -> serde_json::Value {
    let mut schema = match kind {
        SchemaKind::Server => schemars::schema_for!(raw::Server),
        SchemaKind::Policy => schemars::schema_for!(raw::Policy),
        SchemaKind::Data => schemars::schema_for!(crate::permissions::file::Data),
    }
    .to_value();
    schema["title"] = serde_json::Value::String(format!(
        "scopegate {} file",
        match kind {
            SchemaKind::Server => "server",
            SchemaKind::Policy => "policy",
            SchemaKind::Data => "permissions data",
        }
    ));
    schema
}

/// Loads and validates the server file at `path` and every policy file it names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let server = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut errors = Vec::new();
    let Some(raw) = parse::<raw::Server>(&server, &mut errors) else {
        return Err(ConfigErrors(errors));
    };
    let locator = Locator::new(&server.text);
    let mut policies = Vec::new();
    for (i, entry) in raw.policies.iter().enumerate() {
        let at = locator.find(&[Step::Key("policies"), Step::Index(i)]);
        match policy_files(&base.join(entry)) {
            Ok(files) if files.is_empty() => errors.push(
                ConfigError::new(
                    &server.path,
                    format!("policy folder `{entry}` has no .yaml files"),
                )
                .at(at)
                .hint("add a policy file, or remove this entry"),
            ),
            Ok(files) => {
                for file in files {
                    match Source::read(&file) {
                        Ok(source) => policies.push(source),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(
                ConfigError::new(
                    &server.path,
                    format!("cannot read policy path `{entry}`: {e}"),
                )
                .at(at)
                .hint("policy paths are files or folders, relative to the server file"),
            ),
        }
    }
    let mut watched = vec![path.to_path_buf()];
    watched.extend(raw.policies.iter().map(|p| base.join(p)));
    watched.extend(policies.iter().map(|p| p.path.clone()));
    watched.extend(
        raw.signing
            .keys
            .iter()
            .filter_map(|k| k.file.as_ref())
            .map(|f| base.join(f)),
    );
    watched.extend(
        raw.tls
            .iter()
            .flat_map(|t| [base.join(&t.cert), base.join(&t.key)]),
    );
    match from_parsed(&server, raw, &base, &policies) {
        Ok(mut config) if errors.is_empty() => {
            config.watched = watched;
            Ok(config)
        }
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Validates a server file and policy files given as text. `base` resolves TLS file paths.
pub fn from_sources(
    server: &Source,
    base: &Path,
    policies: &[Source],
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let Some(raw) = parse::<raw::Server>(server, &mut errors) else {
        return Err(ConfigErrors(errors));
    };
    from_parsed(server, raw, base, policies)
}

fn policy_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Deserializes `source`, turning a serde_yaml error into a located [`ConfigError`].
fn parse<T: serde::de::DeserializeOwned>(
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_yaml::from_str::<T>(&source.text) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut message = e.to_string();
            let at = e.location().map(|l| (l.line(), l.column()));
            if let Some(cut) = message.find(" at line ") {
                message.truncate(cut);
            }
            let hint = if message.contains("unknown field") {
                "fix the spelling: the keys this place accepts are listed above"
            } else if message.contains("missing field") {
                "add the missing key"
            } else {
                "fix the YAML at this position"
            };
            errors.push(ConfigError::new(&source.path, message).at(at).hint(hint));
            None
        }
    }
}

/// Collects located errors for one file.
struct Check<'a> {
    file: &'a Path,
    locator: Locator,
    errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    fn error(&mut self, path: &[Step<'_>], message: impl Into<String>, hint: impl Into<String>) {
        let at = self.locator.find(path);
        self.errors
            .push(ConfigError::new(self.file, message).at(at).hint(hint));
    }

    fn duration(&mut self, path: &[Step<'_>], value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    path,
                    format!("`{text}` is not a duration: {e}"),
                    "write a duration like `500ms`, `30s`, `5m` or `1h`",
                );
                default
            }
        }
    }
}

/// The `limits:` section, each bound checked so that no listener, semaphore or timer built from
/// it can panic at run time.
fn limits(check: &mut Check<'_>, raw: &raw::Limits) -> Limits {
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
        Duration::from_secs(10),
    );
    let idle_timeout = timeout(
        "idle_timeout",
        raw.idle_timeout.as_deref(),
        Duration::from_secs(60),
    );
    let body_read_timeout = timeout(
        "body_read_timeout",
        raw.body_read_timeout.as_deref(),
        Duration::from_secs(30),
    );
    Limits {
        max_token_bytes: raw.max_token_bytes.unwrap_or(8 * 1024),
        token_cache_entries: raw.token_cache_entries.unwrap_or(10_000),
        mint_cache_entries: raw.mint_cache_entries.unwrap_or(10_000),
        max_header_bytes: raw.max_header_bytes.unwrap_or(64 * 1024).max(8 * 1024),
        max_connections,
        max_connections_per_peer,
        header_read_timeout,
        idle_timeout,
        body_read_timeout,
        shutdown_grace: check.duration(
            &[Step::Key("limits"), Step::Key("shutdown_grace")],
            raw.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        ),
    }
}

fn from_parsed(
    server: &Source,
    raw: raw::Server,
    base: &Path,
    policies: &[Source],
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut check = Check {
        file: &server.path,
        locator: Locator::new(&server.text),
        errors: &mut errors,
    };

    let listen = Listen {
        proxy: socket_addr(&mut check, "proxy", &raw.listen.proxy),
        admin: socket_addr(&mut check, "admin", &raw.listen.admin),
        auth: raw
            .listen
            .auth
            .as_deref()
            .map(|a| socket_addr(&mut check, "auth", a)),
    };
    let forward_auth = forward_auth(&mut check, raw.forward_auth.as_ref());
    let requests = requests(&mut check, raw.requests.as_ref());
    let log = LogConfig {
        json: match raw.log.as_ref().and_then(|l| l.format.as_deref()) {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                check.error(
                    &[Step::Key("log"), Step::Key("format")],
                    format!("`{other}` is not a log format"),
                    "write `text` or `json`",
                );
                false
            }
        },
        level: raw
            .log
            .as_ref()
            .and_then(|l| l.level.clone())
            .unwrap_or_else(|| "info".into()),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        check.error(
            &[Step::Key("log"), Step::Key("level")],
            format!("`{}` is not a log filter", log.level),
            "write a level like `info` or `debug`, or a filter like `scopegate=debug,info`",
        );
    }
    let exchange_clients = raw
        .exchange
        .as_ref()
        .map(|e| exchange_clients(&mut check, base, e));
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| tls_config(&mut check, base, t));
    let issuers = raw
        .issuers
        .iter()
        .filter_map(|(name, i)| issuer(&mut check, name, i))
        .map(Arc::new)
        .collect::<Vec<_>>();
    let mut seen_iss: HashMap<&str, &str> = HashMap::new();
    for i in &issuers {
        if let Some(other) = seen_iss.insert(&i.issuer, &i.name) {
            check.error(
                &[
                    Step::Key("issuers"),
                    Step::Key(&i.name),
                    Step::Key("issuer"),
                ],
                format!(
                    "issuers `{other}` and `{}` have the same `issuer` value `{}`",
                    i.name, i.issuer
                ),
                "each trusted issuer must appear once; merge the two entries",
            );
        }
    }
    let upstreams: BTreeMap<String, Arc<UpstreamConfig>> = raw
        .upstreams
        .iter()
        .filter_map(|(name, u)| upstream(&mut check, name, u).map(|u| (name.clone(), Arc::new(u))))
        .collect();
    let limits = limits(&mut check, &raw.limits);
    let signing = signing(&mut check, base, &raw.signing);
    if let Some(s) = &signing
        && let Some(i) = issuers
            .iter()
            .find(|i| i.issuer.trim_end_matches('/') == s.issuer)
    {
        check.error(
            &[Step::Key("issuers"), Step::Key(&i.name), Step::Key("issuer")],
            format!("issuer `{}` is scopegate's own `signing.issuer`", i.name),
            "scopegate already trusts the tokens it issues itself; remove this issuer, or give scopegate another issuer URL",
        );
    }
    let permissions = raw
        .permissions
        .as_ref()
        .and_then(|p| permissions(&mut check, base, p, &issuers));
    if raw.issuers.is_empty() {
        check.error(
            &[],
            "no `issuers` are configured",
            "add at least one trusted issuer under `issuers:`",
        );
    }

    let mut routes = Vec::new();
    let mut roles = Roles::new();
    let mut exchange_rules = Vec::new();
    let mut policy_tests = Vec::new();
    let mut origins: Vec<(PathBuf, Option<(usize, usize)>)> = Vec::new();
    for source in policies {
        let Some(policy) = parse::<raw::Policy>(source, check.errors) else {
            continue;
        };
        let mut pcheck = Check {
            file: &source.path,
            locator: Locator::new(&source.text),
            errors: check.errors,
        };
        for (name, scopes) in &policy.roles {
            if roles.insert(name.clone(), scopes.clone()).is_some() {
                pcheck.error(
                    &[Step::Key("roles"), Step::Key(name)],
                    format!("role `{name}` is defined in more than one policy file"),
                    "define each role once; roles are shared by every policy file",
                );
            }
        }
        for (i, t) in policy.tests.iter().enumerate() {
            if let Some(test) = policy_test(&mut pcheck, i, t, issuers.first()) {
                policy_tests.push(test);
            }
        }
        for (i, r) in policy.exchange.iter().enumerate() {
            if let Some(rule) =
                exchange_rule(&mut pcheck, i, r, exchange_clients.as_ref(), &upstreams)
            {
                exchange_rules.push(rule);
            }
        }
        for (i, r) in policy.routes.iter().enumerate() {
            if let Some(route) = route(&mut pcheck, i, r, &upstreams, permissions.is_some()) {
                origins.push((
                    source.path.clone(),
                    pcheck.locator.find(&[Step::Key("routes"), Step::Index(i)]),
                ));
                routes.push(route);
            }
        }
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Some(first) = by_name.insert(&r.name, i) {
            let (file, at) = &origins[i];
            let (first_file, first_at) = &origins[first];
            check.errors.push(
                ConfigError::new(file, format!("route name `{}` is used twice", r.name))
                    .at(*at)
                    .hint(format!(
                        "first defined at {}{}; give each route its own name",
                        first_file.display(),
                        line_suffix(*first_at)
                    )),
            );
        }
    }
    let table = match RouteTable::build(routes.into_iter().map(Arc::new).collect()) {
        Ok(t) => Some(t),
        Err(conflicts) => {
            for c in conflicts {
                let (file, at) = &origins[c.route];
                let (other_file, other_at) = &origins[c.other];
                check.errors.push(
                    ConfigError::new(file, c.message)
                        .at(*at)
                        .hint(format!(
                            "the other route is at {}{}; make the paths distinct, or use different methods or hosts",
                            other_file.display(),
                            line_suffix(*other_at)
                        )),
                );
            }
            None
        }
    };
    match (table, signing) {
        (Some(routes), Some(signing)) if errors.is_empty() => Ok(Config {
            listen,
            tls,
            issuers,
            upstreams,
            routes,
            limits,
            signing: Arc::new(signing),
            permissions,
            roles,
            exchange: exchange_clients.map(|(clients, max_act_depth, max_auth_failures)| {
                Arc::new(crate::exchange::ExchangeConfig {
                    clients,
                    rules: exchange_rules,
                    max_act_depth,
                    max_auth_failures_per_minute: max_auth_failures,
                })
            }),
            forward_auth,
            requests,
            watched: Vec::new(),
            log,
            tests: policy_tests,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn line_suffix(at: Option<(usize, usize)>) -> String {
    at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default()
}

fn socket_addr(check: &mut Check<'_>, key: &str, value: &str) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        check.error(
            &[Step::Key("listen"), Step::Key(key)],
            format!("`{value}` is not a listen address"),
            "write an IP and port, like `0.0.0.0:8080` or `[::]:8080`",
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn tls_config(
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

/// Whether `uri` may be fetched for keys: HTTPS anywhere, plain HTTP only on loopback.
fn key_url(check: &mut Check<'_>, path: &[Step<'_>], value: &str) -> Option<Uri> {
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
        Some("http") if is_loopback(&uri) => Some(uri),
        Some("http") => {
            check.error(
                path,
                format!("`{value}` fetches keys over plain HTTP"),
                "use https:// (plain http is allowed only for loopback addresses)",
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

fn issuer(check: &mut Check<'_>, name: &str, raw: &raw::Issuer) -> Option<IssuerConfig> {
    let at = |key: &'static str| [Step::Key("issuers"), Step::Key(name), Step::Key(key)];
    let keys = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(u), None) => key_url(check, &at("jwks_url"), u).map(KeysSource::Jwks),
        (None, Some(u)) => key_url(check, &at("discovery_url"), u).map(KeysSource::Discovery),
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
        leeway: check.duration(
            &at("leeway"),
            raw.leeway.as_deref(),
            Duration::from_secs(30),
        ),
        scopes_claim,
        scopes_format,
        typ: raw.typ.clone(),
        refresh_interval: check.duration(
            &at("refresh_interval"),
            raw.refresh_interval.as_deref(),
            Duration::from_secs(300),
        ),
        unknown_kid_cooldown: check.duration(
            &at("unknown_kid_cooldown"),
            raw.unknown_kid_cooldown.as_deref(),
            Duration::from_secs(30),
        ),
        max_token_age: check.duration(
            &at("max_token_age"),
            raw.max_token_age.as_deref(),
            Duration::from_secs(24 * 3600),
        ),
        combine: match raw.combine {
            None | Some(raw::Combine::Intersect) => Combine::Intersect,
            Some(raw::Combine::Replace) => Combine::Replace,
        },
        fetch_timeout: check.duration(
            &at("fetch_timeout"),
            raw.fetch_timeout.as_deref(),
            Duration::from_secs(5),
        ),
    };
    if config.leeway > Duration::from_secs(300) {
        check.error(
            &at("leeway"),
            "`leeway` is over 5 minutes",
            "clock skew is seconds, not minutes; use 30s or less",
        );
    }
    Some(config)
}

fn upstream(check: &mut Check<'_>, name: &str, raw: &raw::Upstream) -> Option<UpstreamConfig> {
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
    if path.as_ref().is_some_and(|p| p.query().is_some()) {
        check.error(
            &at("url"),
            "an upstream URL cannot have a query",
            "remove the `?...` part",
        );
    }
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
            Duration::from_secs(5),
        ),
        timeout: check.duration(
            &at("timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(30),
        ),
        audience: raw.audience.clone().unwrap_or_else(|| name.to_string()),
        max_concurrency: bounded(check, &at("max_concurrency"), raw.max_concurrency, 1024),
        folds_case: raw.folds_case,
        folds_trailing_slash: raw.folds_trailing_slash,
    })
}

fn route(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::Route,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    has_permissions: bool,
) -> Option<Route> {
    let at = |key: &'static str| [Step::Key("routes"), Step::Index(i), Step::Key(key)];
    let at_match = |key: &'static str| {
        [
            Step::Key("routes"),
            Step::Index(i),
            Step::Key("match"),
            Step::Key(key),
        ]
    };
    let name = &raw.name;
    let mut ok = true;
    if name.is_empty() {
        check.error(
            &at("name"),
            "a route has an empty name",
            "give every route a name; it appears in metrics and errors",
        );
        ok = false;
    }
    let upstream = upstreams.get(&raw.upstream).cloned();
    if upstream.is_none() {
        let defined = upstreams
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        check.error(
            &at("upstream"),
            format!(
                "route `{name}` names upstream `{}`, which is not defined",
                raw.upstream
            ),
            if defined.is_empty() {
                "define it under `upstreams:` in the server file".to_string()
            } else {
                format!("defined upstreams: {defined}")
            },
        );
    }
    let path = &raw.matches.path;
    if crate::normalize::normalize(path).as_deref() != Ok(path.as_str()) {
        check.error(&at_match("path"), format!("route `{name}` path `{path}` is not a normalized path"), "start with `/`, no `//`, no `.`/`..` segments, no `%2F`; parameters are written `{name}`, a catch-all `{*rest}`");
        ok = false;
    }
    let methods = match &raw.matches.method {
        None => None,
        Some(raw::OneOrMany::One(m)) if m == "*" || m.eq_ignore_ascii_case("any") => None,
        Some(raw::OneOrMany::One(m)) => Some(vec![m.clone()]),
        Some(raw::OneOrMany::Many(ms)) => Some(ms.clone()),
    };
    let methods = methods.map(|ms| {
        ms.iter()
            .filter_map(|m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) if m == Method::HEAD => {
                    check.error(&at_match("method"), format!("route `{name}` lists HEAD"), "HEAD is authorized exactly as GET on the same path: list GET");
                    ok = false;
                    None
                }
                Ok(m) => Some(m),
                Err(_) => {
                    check.error(&at_match("method"), format!("`{m}` is not an HTTP method"), "write a method like GET or POST, a list of them, or leave `method` out for any");
                    ok = false;
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let host = raw.matches.host.as_ref().map(|h| h.to_ascii_lowercase());
    let access = match (raw.public, &raw.require) {
        (true, None) => Access::Public,
        (true, Some(_)) => {
            check.error(
                &at("public"),
                format!("route `{name}` is public and also has `require`"),
                "a public route skips authentication; remove one of the two",
            );
            ok = false;
            Access::Public
        }
        (false, None) => {
            check.error(
                &[Step::Key("routes"), Step::Index(i)],
                format!("route `{name}` has neither `require` nor `public: true`"),
                "add `require: { scopes: [...] }`, or `public: true` to skip authentication",
            );
            ok = false;
            Access::Public
        }
        (false, Some(req)) => {
            for s in req.scopes.iter().chain(&req.any_scopes) {
                if s.is_empty() || s.contains(char::is_whitespace) {
                    check.error(
                        &at("require"),
                        format!("scope `{s}` is empty or has white space"),
                        "scopes are single tokens like `read:builds`",
                    );
                    ok = false;
                }
            }
            Access::Scopes(ScopeRule {
                all: req.scopes.clone(),
                any: req.any_scopes.clone(),
            })
        }
    };
    let organization = raw.organization.as_ref().and_then(|o| {
        let source = organization(check, i, name, path, o);
        ok &= source.is_some();
        source
    });
    if organization.is_some() && !has_permissions {
        check.error(
            &at("organization"),
            format!(
                "route `{name}` resolves an organization, but no permissions backend is configured"
            ),
            "add `permissions:` to the server file (a `files` list or a `url`)",
        );
        ok = false;
    }
    if raw.public
        && (raw.organization.is_some() || raw.condition.is_some() || raw.forward.is_some())
    {
        check.error(&at("public"), format!("route `{name}` is public but has `organization`, `condition` or `forward`"), "a public route has no caller to check or mint for; remove those keys or make the route require a token");
        ok = false;
    }
    let condition = match raw
        .condition
        .as_deref()
        .map(crate::condition::Condition::compile)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            check.error(
                &at("condition"),
                format!("route `{name}` condition does not compile: {e}"),
                format!(
                    "write a CEL expression over {}",
                    crate::condition::VARIABLES.join(", ")
                ),
            );
            ok = false;
            None
        }
    };
    let forward = raw
        .forward
        .as_ref()
        .map_or_else(crate::mint::Forward::default, |f| forward(check, i, f));
    if let Some(u) = &upstream {
        // Outside `{...}` parameters, the template must already be in the upstream's folded
        // form, or its own requests would be refused as folding onto another route.
        let statics: String = path
            .split('{')
            .map(|part| part.split_once('}').map_or(part, |(_, rest)| rest))
            .collect();
        let cased = u.folds_case && statics.bytes().any(|b| b.is_ascii_uppercase());
        let slashed = u.folds_trailing_slash && path.len() > 1 && path.ends_with('/');
        if cased || slashed {
            check.error(
                &at_match("path"),
                format!("route `{name}` path `{path}` is not in the form its upstream folds paths to"),
                "the upstream has `folds_case` / `folds_trailing_slash`: write the path in lower case without a trailing `/`",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Route {
        name: name.clone(),
        methods,
        host,
        path: path.clone(),
        upstream: upstream?,
        access,
        organization,
        condition,
        forward,
        max_body_bytes: raw.max_body_bytes,
        matrix_params: raw.matrix_params,
    })
}

fn organization(
    check: &mut Check<'_>,
    i: usize,
    name: &str,
    path: &str,
    raw: &raw::Organization,
) -> Option<crate::org::OrgSource> {
    use crate::org::OrgSource;
    let at = [
        Step::Key("routes"),
        Step::Index(i),
        Step::Key("organization"),
    ];
    let hint = "write `{ from: path, param: org }`, `{ from: header, name: X-Org-Id }`, `{ from: query, param: org }`, `{ from: host }` or `{ from: claim, claim: org_id }`";
    let source = match (raw.from, &raw.param, &raw.name, &raw.claim) {
        (raw::OrgFrom::Path, Some(p), None, None) => {
            if !path.contains(&format!("{{{p}}}")) {
                check.error(&at, format!("route `{name}` takes its organization from path parameter `{p}`, which its path `{path}` does not have"), format!("add `{{{p}}}` to the path, or name one of its parameters"));
                return None;
            }
            OrgSource::Path(p.clone())
        }
        (raw::OrgFrom::Query, Some(p), None, None) => OrgSource::Query(p.clone()),
        (raw::OrgFrom::Header, None, Some(h), None) => {
            match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => OrgSource::Header(h),
                Err(_) => {
                    check.error(&at, format!("`{h}` is not a header name"), hint);
                    return None;
                }
            }
        }
        (raw::OrgFrom::Host, None, None, None) => OrgSource::Host,
        (raw::OrgFrom::Claim, None, None, Some(c)) => OrgSource::Claim(c.clone()),
        _ => {
            check.error(
                &at,
                format!("route `{name}` has an incomplete or mixed `organization`"),
                hint,
            );
            return None;
        }
    };
    Some(source)
}

fn forward(check: &mut Check<'_>, i: usize, raw: &raw::Forward) -> crate::mint::Forward {
    use crate::mint::{Forward, ForwardScopes};
    let at = |key: &'static str| {
        [
            Step::Key("routes"),
            Step::Index(i),
            Step::Key("forward"),
            Step::Key(key),
        ]
    };
    let defaults = Forward::default();
    let scopes = match &raw.scopes {
        None => defaults.scopes,
        Some(raw::ForwardScopes::Keyword(k)) if k == "required" => ForwardScopes::Required,
        Some(raw::ForwardScopes::Keyword(k)) if k == "effective" => ForwardScopes::Effective,
        Some(raw::ForwardScopes::Keyword(k)) => {
            check.error(
                &at("scopes"),
                format!("`{k}` is not a forward scope rule"),
                "write `required`, `effective`, or a list of scopes",
            );
            defaults.scopes
        }
        Some(raw::ForwardScopes::List(l)) => ForwardScopes::List(l.clone()),
    };
    let ttl = check.duration(&at("ttl"), raw.ttl.as_deref(), defaults.ttl);
    if ttl.is_zero() || ttl > Duration::from_secs(24 * 3600) {
        check.error(
            &at("ttl"),
            "`ttl` must be between 1s and 24h",
            "minted tokens are short-lived; 5m is a good default",
        );
    }
    let claims = raw
        .claims
        .iter()
        .map(|c| match c {
            raw::ForwardClaim::Same(n) => (n.clone(), n.clone()),
            raw::ForwardClaim::Renamed(r) => (r.from.clone(), r.to.clone()),
        })
        .collect::<Vec<_>>();
    const RESERVED: &[&str] = &[
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "scope",
        "client_id",
        "org_id",
        "token_use",
        "act",
        "sub_id",
        "resource",
        "bound_path",
        "bound_methods",
    ];
    for (_, to) in &claims {
        if RESERVED.contains(&to.as_str()) {
            check.error(
                &at("claims"),
                format!("a forwarded claim cannot be named `{to}`"),
                format!(
                    "scopegate sets {}; pick another name with `{{ from: ..., as: ... }}`",
                    RESERVED.join(", ")
                ),
            );
        }
    }
    Forward {
        scopes,
        ttl,
        claims,
    }
}

fn signing(check: &mut Check<'_>, base: &Path, raw: &raw::Signing) -> Option<crate::mint::Signing> {
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
    (keys.len() == raw.keys.len()).then_some(crate::mint::Signing { issuer, keys })
}

fn permissions(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::Permissions,
    issuers: &[Arc<IssuerConfig>],
) -> Option<PermissionsConfig> {
    use crate::permissions::{CacheConfig, OnError};
    let at = |key: &'static str| [Step::Key("permissions"), Step::Key(key)];
    let timeout = check.duration(
        &at("timeout"),
        raw.timeout.as_deref(),
        Duration::from_secs(2),
    );
    let backend: Arc<dyn crate::permissions::Backend> = match (&raw.files, &raw.url) {
        (Some(files), None) => {
            let files = files.iter().map(|f| base.join(f)).collect();
            let known = issuers
                .iter()
                .map(|i| (i.name.clone(), i.issuer.clone()))
                .collect();
            match crate::permissions::file::FileBackend::load(files, known) {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    check.error(
                        &at("files"),
                        format!("permissions data: {e}"),
                        "fix the data file; see the README for its format (with several issuers, each file names its `issuer:`)",
                    );
                    return None;
                }
            }
        }
        (None, Some(url)) => match url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("https"))
                    || (u.scheme_str() == Some("http") && is_loopback(&u)) =>
            {
                Arc::new(crate::permissions::http::HttpBackend::new(
                    u,
                    timeout,
                    bounded(check, &at("max_concurrency"), raw.max_concurrency, 64),
                ))
            }
            _ => {
                check.error(
                    &at("url"),
                    format!("`{url}` is not an https URL (or http on loopback)"),
                    "write the permissions API's URL, like `https://perms.internal/v1/check`; plain http is allowed only for loopback addresses",
                );
                return None;
            }
        },
        _ => {
            check.error(
                &[Step::Key("permissions")],
                "`permissions` needs exactly one of `files` and `url`",
                "use `files: [data.yaml]` for the file backend or `url: ...` for the HTTP backend",
            );
            return None;
        }
    };
    let on_error = match raw.on_error {
        None | Some(raw::OnError::Deny) => OnError::Deny,
        Some(raw::OnError::Stale) => OnError::Stale(check.duration(
            &at("stale_for"),
            raw.stale_for.as_deref(),
            Duration::from_secs(300),
        )),
    };
    let cache = CacheConfig {
        entries: raw.cache_entries.unwrap_or(10_000),
        default_ttl: check.duration(
            &at("default_ttl"),
            raw.default_ttl.as_deref(),
            Duration::from_secs(60),
        ),
        max_ttl: check.duration(
            &at("max_ttl"),
            raw.max_ttl.as_deref(),
            Duration::from_secs(300),
        ),
        negative_ttl: check.duration(
            &at("negative_ttl"),
            raw.negative_ttl.as_deref(),
            Duration::from_secs(10),
        ),
        on_error,
        budget: miss_budget(check, raw.miss_budget.as_ref()),
    };
    Some(PermissionsConfig { backend, cache })
}

fn miss_budget(
    check: &mut Check<'_>,
    raw: Option<&raw::MissBudget>,
) -> crate::permissions::budget::BudgetConfig {
    let mut budget = crate::permissions::budget::BudgetConfig::default();
    let Some(raw) = raw else { return budget };
    let at = |key: &'static str| {
        [
            Step::Key("permissions"),
            Step::Key("miss_budget"),
            Step::Key(key),
        ]
    };
    if let Some(rate) = raw.per_second {
        if rate.is_finite() && (0.01..=100_000.0).contains(&rate) {
            budget.per_second = rate;
        } else {
            check.error(
                &at("per_second"),
                format!("`{rate}` is not a usable rate"),
                "write misses per second per caller, from 0.01 to 100000; the default is 10",
            );
        }
    }
    if let Some(burst) = raw.burst {
        if (1..=1_000_000).contains(&burst) {
            budget.burst = burst;
        } else {
            check.error(
                &at("burst"),
                format!("`{burst}` is not a usable burst"),
                "write a number from 1 to 1000000; the default is 50",
            );
        }
    }
    budget.concurrency = bounded(
        check,
        &at("concurrency"),
        raw.concurrency,
        budget.concurrency,
    );
    budget
}

fn requests(check: &mut Check<'_>, raw: Option<&raw::Requests>) -> crate::inbound::RequestRules {
    let mut rules = crate::inbound::RequestRules::default();
    let Some(raw) = raw else { return rules };
    let at = |key: &'static str, i: usize| [Step::Key("requests"), Step::Key(key), Step::Index(i)];
    for (i, m) in raw.extension_methods.iter().enumerate() {
        match Method::from_bytes(m.as_bytes()) {
            Ok(method)
                if m.bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') =>
            {
                rules.extension_methods.push(method);
            }
            _ => check.error(
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

/// The largest concurrency bound accepted: far above any real need, far below what would make
/// a semaphore panic.
const MAX_CONCURRENCY: usize = 1_000_000;

/// A concurrency bound from 1 to [`MAX_CONCURRENCY`], else an error (and `default`).
fn bounded(check: &mut Check<'_>, at: &[Step<'_>], value: Option<usize>, default: usize) -> usize {
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

fn forward_auth(
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
    config.convention = match raw.convention.as_deref() {
        None | Some("nginx") => Some(Convention::Nginx),
        Some("auto") => None,
        Some("ingress-nginx") => Some(Convention::IngressNginx),
        Some("traefik") | Some("caddy") => Some(Convention::Traefik),
        Some("envoy") => Some(Convention::Envoy),
        Some(other) => {
            check.error(
                &[Step::Key("forward_auth"), Step::Key("convention")],
                format!("`{other}` is not a forward-auth convention"),
                "write `nginx` (the default), `ingress-nginx`, `traefik` (also Caddy), `envoy`, or `auto` to detect it per request",
            );
            None
        }
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

/// Exchange clients (id to secret digest), the act depth limit and the client-authentication
/// failure limit.
type ExchangeClients = (HashMap<String, [u8; 32]>, usize, u32);

/// The `exchange:` section of the server file, validated.
fn exchange_clients(check: &mut Check<'_>, base: &Path, raw: &raw::Exchange) -> ExchangeClients {
    let mut clients = HashMap::new();
    for (id, c) in &raw.clients {
        let at = [Step::Key("exchange"), Step::Key("clients"), Step::Key(id)];
        let secret = match (&c.secret_file, &c.secret_env) {
            (Some(file), None) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read the secret file `{}`: {e}", path.display()))
            }
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            _ => Err(format!(
                "client `{id}` needs exactly one of `secret_file` and `secret_env`"
            )),
        };
        match secret {
            Ok(s) if s.len() >= 16 => {
                clients.insert(id.clone(), crate::exchange::secret_hash(s.as_bytes()));
            }
            Ok(_) => check.error(&at, format!("the secret of client `{id}` is shorter than 16 characters"), "use a long random secret, for example `openssl rand -hex 32`"),
            Err(e) => check.error(&at, e, "secrets are never written in YAML: put the secret in a file (a Kubernetes Secret) or an environment variable"),
        }
    }
    let max_auth_failures = match raw.max_auth_failures_per_minute {
        None => 10,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(n) => {
            check.error(
                &[
                    Step::Key("exchange"),
                    Step::Key("max_auth_failures_per_minute"),
                ],
                format!("`{n}` is not a usable number of failures"),
                "write a number from 1 to 10000; the default is 10",
            );
            10
        }
    };
    (clients, raw.max_act_depth.unwrap_or(2), max_auth_failures)
}

fn exchange_rule(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::ExchangeRule,
    clients: Option<&ExchangeClients>,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
) -> Option<crate::exchange::Rule> {
    let at = |key: &'static str| [Step::Key("exchange"), Step::Index(i), Step::Key(key)];
    let name = &raw.name;
    let mut ok = true;
    match clients {
        None => {
            check.error(
                &at("client"),
                format!("exchange rule `{name}` needs token exchange, which is not configured"),
                "add `exchange: { clients: ... }` to the server file",
            );
            ok = false;
        }
        Some((c, _, _)) if !c.contains_key(&raw.client) => {
            let known = c.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            check.error(
                &at("client"),
                format!(
                    "exchange rule `{name}` names client `{}`, which is not configured",
                    raw.client
                ),
                format!("configured clients: {known}"),
            );
            ok = false;
        }
        Some(_) => {}
    }
    if !upstreams.values().any(|u| u.audience == raw.audience) {
        let known = upstreams
            .values()
            .map(|u| u.audience.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        check.error(&at("audience"), format!("exchange rule `{name}` issues tokens for audience `{}`, which no upstream has", raw.audience), format!("the token is good only on routes to an upstream with this audience; audiences: {known}"));
        ok = false;
    }
    if raw.scopes.is_empty() {
        check.error(
            &at("scopes"),
            format!("exchange rule `{name}` allows no scopes"),
            "list the scopes a client may obtain",
        );
        ok = false;
    }
    let max_ttl = check.duration(
        &at("max_ttl"),
        Some(&raw.max_ttl),
        Duration::from_secs(3600),
    );
    if max_ttl.is_zero() || max_ttl > Duration::from_secs(30 * 24 * 3600) {
        check.error(
            &at("max_ttl"),
            "`max_ttl` must be between 1s and 30 days",
            "a callback token lives as long as the job it serves, no longer",
        );
        ok = false;
    }
    let bind = match raw.bind.as_deref().map(crate::exchange::Bind::new) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            check.error(
                &at("bind"),
                format!("`bind` is not a path template: {e}"),
                "write a template like `/builds/{id}`",
            );
            ok = false;
            None
        }
    };
    let bind_methods = raw.bind_methods.as_ref().map(|ms| {
        ms.iter()
            .filter_map(|m| match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) && bind.is_some() => {
                    Some(method.to_string())
                }
                _ => {
                    check.error(
                        &at("bind_methods"),
                        format!("`{m}` is not an upper-case method, or the rule has no `bind`"),
                        "write methods like `[PUT]`, together with a `bind` path template",
                    );
                    ok = false;
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    ok.then(|| crate::exchange::Rule {
        name: name.clone(),
        client: raw.client.clone(),
        audience: raw.audience.clone(),
        scopes: raw.scopes.clone(),
        max_ttl,
        bind,
        bind_methods,
    })
}

fn policy_test(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::PolicyTest,
    issuer: Option<&Arc<IssuerConfig>>,
) -> Option<crate::described::PolicyTest> {
    let at = |key: &'static str| [Step::Key("tests"), Step::Index(i), Step::Key(key)];
    let location = format!(
        "{}{}",
        check.file.display(),
        line_suffix(check.locator.find(&[Step::Key("tests"), Step::Index(i)]))
    );
    let method = match Method::from_bytes(
        raw.request
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_bytes(),
    ) {
        Ok(m) => m,
        Err(_) => {
            check.error(
                &at("request"),
                format!("test `{}` has an invalid method", raw.name),
                "write a method like GET or POST",
            );
            return None;
        }
    };
    let uri_text = match &raw.request.host {
        Some(h) => format!("http://{h}{}", raw.request.path),
        None => raw.request.path.clone(),
    };
    let Ok(uri) = uri_text.parse::<Uri>() else {
        check.error(
            &at("request"),
            format!("test `{}` has an invalid path", raw.name),
            "write a path like `/orgs/acme/builds?x=1`",
        );
        return None;
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &raw.request.headers {
        match (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            _ => {
                check.error(
                    &at("request"),
                    format!("test `{}` has an invalid header `{k}`", raw.name),
                    "header names are tokens, values printable text",
                );
                return None;
            }
        }
    }
    let allow = match raw.expect.decision.as_str() {
        "allow" => true,
        "deny" => false,
        other => {
            check.error(
                &at("expect"),
                format!("`{other}` is not a decision"),
                "write `allow` or `deny`",
            );
            return None;
        }
    };
    let claims = raw
        .claims
        .clone()
        .map(|c| crate::described::with_default_claims(c, issuer.map(|i| i.as_ref())));
    let grants = match (raw.member, &raw.grants) {
        (Some(false), _) => Some(None),
        (_, Some(g)) => Some(Some(g.clone())),
        _ => None,
    };
    Some(crate::described::PolicyTest {
        name: raw.name.clone(),
        location,
        request: crate::described::Described {
            method,
            uri,
            headers,
            claims,
            grants,
        },
        allow,
        code: raw.expect.code.clone(),
        scope: raw.expect.scope.clone(),
    })
}
