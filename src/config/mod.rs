//! Configuration: reads `scopegate.yaml` and its policy files, validates everything, and produces
//! the typed [`Config`] that request-time code uses without re-checking anything.

mod client_tls;
mod cors;
pub mod defaults;
mod error;
mod exchange;
mod forward_auth;
mod limits;
mod locate;
mod permissions;
mod policy_tests;
mod raw;
mod routes;
mod server;
mod signing;
mod state;
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
#[allow(
    clippy::wildcard_imports,
    reason = "each section module holds the builders of one part of the file"
)]
use {
    client_tls::*, cors::*, exchange::*, forward_auth::*, limits::*, permissions::*,
    policy_tests::*, routes::*, server::*, signing::*,
};

use crate::route::RouteTable;

/// A whole validated configuration: the server file plus every policy file.
#[derive(Debug)]
pub struct Config {
    pub(crate) listen: Listen,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) issuers: Vec<Arc<IssuerConfig>>,
    pub(crate) upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    pub(crate) routes: RouteTable,
    pub(crate) limits: Limits,
    pub(crate) signing: Arc<crate::signing::Signing>,
    /// The targets allowed plain http to a non-loopback host (`issuer/<name>`, `permissions`).
    pub(crate) insecure_http: Vec<String>,
    /// scopegate as the issuer of the tokens it mints and exchanges.
    pub(crate) own_issuer: Arc<IssuerConfig>,
    pub(crate) permissions: Option<PermissionsConfig>,
    /// Role name to the scopes it grants, from every policy file.
    pub(crate) roles: Roles,
    /// Token exchange, when clients are configured.
    pub(crate) exchange: Option<Arc<crate::exchange::ExchangeConfig>>,
    pub(crate) forward_auth: crate::forward_auth::ForwardAuthConfig,
    /// Methods accepted and headers stripped before forwarding.
    pub(crate) requests: crate::inbound::RequestRules,
    /// The server file's CORS policy: every route's unless it has its own, and that of answers
    /// no route matched.
    pub(crate) cors: Option<Arc<crate::policy::Cors>>,
    /// Files and folders whose change triggers a reload (empty for configs built from text).
    pub watched: Vec<PathBuf>,
    pub(crate) log: LogConfig,
    /// The time source of token decisions: the system clock, unless a test moves it.
    pub clock: crate::token::Clock,
    /// Policy tests from every policy file, run by `scopegate check`.
    pub(crate) tests: Vec<crate::described::PolicyTest>,
    /// Redis, shared by every replica, when configured.
    pub(crate) state: Option<crate::store::StoreConfig>,
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
    /// The `postgres` backend's database, for `scopegate db migrate`.
    pub(crate) database: Option<crate::permissions::postgres::Database>,
}

/// Listener addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The forward-auth decision listener, when configured.
    pub auth: Option<SocketAddr>,
    /// Threads serving requests (`workers:`); `None`: one per CPU core. Like the addresses, it
    /// takes effect at start only.
    pub workers: Option<usize>,
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
    // Targets' CA files and client certificates: a rotation (cert-manager) reloads.
    let targets = (raw.issuers.values().filter_map(|i| i.tls.as_ref()))
        .chain(raw.upstreams.values().filter_map(|u| u.tls.as_ref()))
        .chain(raw.permissions.iter().filter_map(|p| p.tls.as_ref()));
    watched.extend(
        targets
            .flat_map(raw::ClientTls::files)
            .map(|f| base.join(f)),
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
        workers: raw.workers.and_then(|n| workers(&mut check, n)),
    };
    let forward_auth = forward_auth(&mut check, raw.forward_auth.as_ref());
    let requests = requests(&mut check, raw.requests.as_ref());
    let global_cors = raw
        .cors
        .as_ref()
        .and_then(|c| cors(&mut check, &[Step::Key("cors")], c, None))
        .map(Arc::new);
    let log = LogConfig {
        json: matches!(
            raw.log.as_ref().and_then(|l| l.format),
            Some(raw::LogFormat::Json)
        ),
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
        .filter_map(|(name, i)| issuer(&mut check, base, name, i))
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
        .filter_map(|(name, u)| {
            upstream(&mut check, base, name, u).map(|u| (name.clone(), Arc::new(u)))
        })
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
    let shared = (raw.state.as_ref()).and_then(|s| state::state(&mut check, base, s));
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
                exchange_rule(&mut pcheck, i, r, exchange_clients.as_ref(), &upstreams).filter(
                    |rule| {
                        rule.uses.is_none()
                            || shared.is_some()
                            || uses_without_state(&mut pcheck, i)
                    },
                )
            {
                exchange_rules.push(rule);
            }
        }
        for (i, r) in policy.routes.iter().enumerate() {
            if let Some(route) = route(
                &mut pcheck,
                i,
                r,
                &upstreams,
                permissions.is_some(),
                global_cors.as_ref(),
            ) {
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
            insecure_http: insecure_targets(&issuers, raw.permissions.as_ref(), raw.state.as_ref()),
            issuers,
            own_issuer: Arc::new(own_issuer(&upstreams, &signing, &exchange_rules)),
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
            cors: global_cors,
            watched: Vec::new(),
            clock: crate::token::Clock::default(),
            log,
            tests: policy_tests,
            state: shared,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// The most worker threads `workers:` may ask for: far above any core count a gateway pod gets,
/// low enough that a typo (`20000`) is caught instead of spawning the threads.
const MAX_WORKERS: u64 = 1024;

fn workers(check: &mut Check<'_>, n: u64) -> Option<usize> {
    if (1..=MAX_WORKERS).contains(&n) {
        return usize::try_from(n).ok();
    }
    check.error(
        &[Step::Key("workers")],
        format!("`workers: {n}` is not between 1 and {MAX_WORKERS}"),
        "leave it out for one thread per CPU core, or give the pod's CPU limit",
    );
    None
}

fn line_suffix(at: Option<(usize, usize)>) -> String {
    at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default()
}
