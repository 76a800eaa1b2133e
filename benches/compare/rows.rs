//! The rows: which exist, which a run selects (with the rows they are compared with), how each
//! is measured, and the table printed at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{Load, format_latency, on_path};
use crate::load::{self, Distinct};
use crate::servers::{self, Cpu, Gateway, Orgs, Running};
use crate::settings::Settings;
use crate::tokens::{self, Keys, TokenFile};

const SCOPE_PATH: &str = "/builds/1";
const ORG_PATH: &str = "/orgs/acme/builds";
const COLD_ORG_PATH: &str = "/orgs/o%07d/builds";

/// Every row, in the order they run (a row's anchor comes before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Direct,
    Nginx,
    Floor,
    HaproxyOne,
    HaproxyDistinct,
    ScopeCached,
    OrgWarm,
    ScopeDistinct,
    OrgDistinct,
    ColdOrg,
    ColdOrgPostgres,
    Routes10,
    Routes10k,
    Issuers1,
    Issuers100,
    RateNginx,
    RateOrgWarm,
    Memory,
}

const KINDS: [Kind; 18] = [
    Kind::Direct,
    Kind::Nginx,
    Kind::Floor,
    Kind::HaproxyOne,
    Kind::HaproxyDistinct,
    Kind::ScopeCached,
    Kind::OrgWarm,
    Kind::ScopeDistinct,
    Kind::OrgDistinct,
    Kind::ColdOrg,
    Kind::ColdOrgPostgres,
    Kind::Routes10,
    Kind::Routes10k,
    Kind::Issuers1,
    Kind::Issuers100,
    Kind::RateNginx,
    Kind::RateOrgWarm,
    Kind::Memory,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "upstream direct",
            Kind::Nginx => "nginx proxy",
            Kind::Floor => "hyper floor proxy",
            Kind::HaproxyOne => "haproxy jwt_verify one token",
            Kind::HaproxyDistinct => "haproxy jwt_verify distinct tokens",
            Kind::ScopeCached => "scopegate scope cached token",
            Kind::OrgWarm => "scopegate org warm",
            Kind::ScopeDistinct => "scopegate scope distinct tokens",
            Kind::OrgDistinct => "scopegate org distinct tokens",
            Kind::ColdOrg => "scopegate cold org",
            Kind::ColdOrgPostgres => "scopegate cold org postgres",
            Kind::Routes10 => "growth 10 routes",
            Kind::Routes10k => "growth 10000 routes",
            Kind::Issuers1 => "growth 1 issuer distinct tokens",
            Kind::Issuers100 => "growth 100 issuers distinct tokens",
            Kind::RateNginx => "fixed rate nginx proxy",
            Kind::RateOrgWarm => "fixed rate scopegate org warm",
            Kind::Memory => "memory cached ES256 tokens",
        }
    }

    /// The row this one's ratio is taken against (same worker count).
    fn anchor(self) -> Option<Kind> {
        match self {
            Kind::Direct | Kind::Routes10 | Kind::Issuers1 | Kind::Memory => None,
            Kind::Nginx => Some(Kind::Direct),
            Kind::Floor
            | Kind::HaproxyOne
            | Kind::HaproxyDistinct
            | Kind::ScopeCached
            | Kind::OrgWarm
            | Kind::RateNginx => Some(Kind::Nginx),
            Kind::ScopeDistinct | Kind::OrgDistinct => Some(Kind::HaproxyDistinct),
            Kind::ColdOrg => Some(Kind::OrgWarm),
            Kind::ColdOrgPostgres => Some(Kind::ColdOrg),
            Kind::Routes10k => Some(Kind::Routes10),
            Kind::Issuers100 => Some(Kind::Issuers1),
            Kind::RateOrgWarm => Some(Kind::RateNginx),
        }
    }

    /// The worker counts it runs with: every one for the anchor comparisons, the largest for
    /// growth and memory, none for the upstream (always one nginx worker).
    fn workers(self, all: &[usize]) -> Vec<usize> {
        match self {
            Kind::Direct => vec![1],
            Kind::Routes10 | Kind::Routes10k | Kind::Issuers1 | Kind::Issuers100 | Kind::Memory => {
                all.iter().max().into_iter().copied().collect()
            }
            _ => all.to_vec(),
        }
    }

    fn needs_tokens(self) -> bool {
        matches!(
            self,
            Kind::HaproxyDistinct
                | Kind::ScopeDistinct
                | Kind::OrgDistinct
                | Kind::Issuers1
                | Kind::Issuers100
        )
    }
}

/// One printed row.
struct Row {
    kind: Kind,
    workers: usize,
    load: Load,
    rss_kib: Option<u64>,
    /// CPU per request of the server under test (the rows with one token and a server).
    cpu: Option<Cpu>,
    note: String,
}

/// What every row shares during a run.
struct Bench {
    settings: Settings,
    keys: Keys,
    token: String,
    tokens: Option<TokenFile>,
    dir: PathBuf,
    upstream: Running,
    rows: BTreeMap<(Kind, usize), Row>,
}

/// Selects rows by `BENCH_ONLY`, adds their anchors, prepares keys and tokens, runs every row
/// and prints the table.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    for tool in ["nginx", "wrk"] {
        if !on_path(tool) {
            return Err(format!(
                "`{tool}` is not on PATH: run benches/run, which installs it"
            ));
        }
    }
    let mut selected: Vec<Kind> = KINDS
        .into_iter()
        .filter(|k| {
            let name = k.name().to_lowercase();
            settings.only.is_empty() || settings.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    let mut i = 0;
    while i < selected.len() {
        if let Some(anchor) = selected[i].anchor()
            && !selected.contains(&anchor)
        {
            selected.push(anchor);
        }
        i += 1;
    }
    selected.sort();
    if selected.is_empty() {
        return Err("BENCH_ONLY selects no row".into());
    }
    let haproxy = selected
        .iter()
        .any(|k| matches!(k, Kind::HaproxyOne | Kind::HaproxyDistinct));
    let rate = selected
        .iter()
        .any(|k| matches!(k, Kind::RateNginx | Kind::RateOrgWarm));
    for (needed, tool) in [(haproxy, "haproxy"), (rate, "oha")] {
        if needed && !on_path(tool) {
            return Err(format!(
                "`{tool}` is not on PATH: run benches/run, which installs it"
            ));
        }
    }

    let data = tokens::data_dir();
    let keys = tokens::keys(&data)?;
    let token = tokens::single(&keys.rsa, tokens::ISSUER)?;
    let tokens = if selected.iter().any(|k| k.needs_tokens()) {
        let (file, took) =
            tokens::file(&data, "rs256", &keys.rsa, tokens::ISSUER, settings.tokens)?;
        report_made(&file, took, "RS256");
        Some(file)
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("scopegate-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let upstream = servers::upstream(&dir, &keys.jwks)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "compare bench: {cores} cores shared by wrk/oha, the upstream nginx (1 worker) and the server under test; \
         wrk -t1 -c{} --latency, {}s warm-up + {}s per row; rows: {}",
        load::CONNECTIONS,
        load::WARMUP,
        settings.seconds,
        selected
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut bench = Bench {
        settings,
        keys,
        token,
        tokens,
        dir,
        upstream,
        rows: BTreeMap::new(),
    };
    for kind in selected {
        for workers in kind.workers(&bench.settings.workers) {
            let started = Instant::now();
            let row = bench
                .measure(kind, workers)
                .map_err(|e| format!("row `{}` ({workers} workers): {e}", kind.name()))?;
            println!(
                "  {:<42} w{workers}: {:>8.0} req/s, p50 {}, p99 {}, {} requests ({:.0}s)",
                kind.name(),
                row.load.requests_per_sec,
                format_latency(row.load.p50),
                format_latency(row.load.p99),
                row.load.requests,
                started.elapsed().as_secs_f64()
            );
            bench.rows.insert((kind, workers), row);
        }
    }
    bench.print();
    let _ = std::fs::remove_dir_all(&bench.dir);
    Ok(())
}

fn report_made(file: &TokenFile, took: Option<Duration>, alg: &str) {
    match took {
        Some(t) => println!(
            "made {} distinct {alg} tokens in {:.1}s on every core ({}, kept for the next runs)",
            file.count,
            t.as_secs_f64(),
            file.path.display()
        ),
        None => println!(
            "reusing {} distinct {alg} tokens from {}",
            file.count,
            file.path.display()
        ),
    }
}

fn cpu(
    before: Option<servers::Ticks>,
    after: Option<servers::Ticks>,
    requests: u64,
) -> Option<Cpu> {
    before
        .zip(after)
        .and_then(|(b, a)| b.per_request(a, requests))
}

impl Bench {
    fn row(&self, kind: Kind, workers: usize, load: Load) -> Row {
        Row {
            kind,
            workers,
            load,
            rss_kib: None,
            cpu: None,
            note: String::new(),
        }
    }

    fn tokens(&self) -> Result<&TokenFile, String> {
        self.tokens.as_ref().ok_or_else(|| "no token file".into())
    }

    /// scopegate for a row, in a folder of the row's own (its config and log).
    fn start(&self, kind: Kind, gateway: &Gateway) -> Result<Running, String> {
        let dir = self
            .dir
            .join(format!("gateway-{kind:?}-w{}", gateway.workers));
        gateway.start(&dir, self.upstream.addr)
    }

    /// A scopegate row: start it per `gateway`, preflight `path`, run `measure`, read its RSS.
    fn gateway(
        &self,
        kind: Kind,
        gateway: Gateway,
        path: &str,
        measure: impl FnOnce(&str, &Running) -> Result<(Load, Option<Cpu>), String>,
    ) -> Result<Row, String> {
        let workers = gateway.workers;
        let mut running = self.start(kind, &gateway)?;
        servers::preflight(running.addr, path, &self.token).map_err(|e| running.explain(e))?;
        let (load, cpu) = measure(&format!("http://{}", running.addr), &running)
            .map_err(|e| running.explain(e))?;
        let mut row = self.row(kind, workers, load);
        row.rss_kib = running.rss_kib();
        row.cpu = cpu;
        Ok(row)
    }

    /// A same-token run against `server` at `url`, with its CPU per request.
    fn same_token(&self, url: &str, server: &Running) -> Result<(Load, Option<Cpu>), String> {
        let (load, before, after) =
            load::same_token_probed(url, &self.token, self.settings.seconds, || server.ticks())?;
        let cpu = cpu(before, after, load.requests);
        Ok((load, cpu))
    }

    /// A distinct-value run against `server` at `base`, with its CPU per request.
    fn distinct(
        &self,
        base: &str,
        path: &str,
        values: &Distinct<'_>,
        server: &Running,
    ) -> Result<(Load, Option<Cpu>), String> {
        let seconds = self.settings.seconds;
        let (load, before, after) =
            load::distinct_probed(base, path, values, seconds, || server.ticks())?;
        let cpu = cpu(before, after, load.requests);
        Ok((load, cpu))
    }

    /// A row of a server started for it, measured by `run`.
    fn started(
        &self,
        kind: Kind,
        workers: usize,
        server: &Running,
        run: impl FnOnce(&Running) -> Result<(Load, Option<Cpu>), String>,
    ) -> Result<Row, String> {
        let (load, cpu) = run(server)?;
        let mut row = self.row(kind, workers, load);
        row.rss_kib = server.rss_kib();
        row.cpu = cpu;
        Ok(row)
    }

    fn measure(&self, kind: Kind, workers: usize) -> Result<Row, String> {
        let seconds = self.settings.seconds;
        let token = self.token.as_str();
        let at = |addr: SocketAddr, path: &str| format!("http://{addr}{path}");
        let plain = Gateway {
            workers,
            ..Gateway::default()
        };
        let same = |path: &'static str| {
            move |base: &str, server: &Running| self.same_token(&format!("{base}{path}"), server)
        };
        let no_cpu = |load: Load| (load, None);
        match kind {
            Kind::Direct => {
                let load = load::same_token(&at(self.upstream.addr, ORG_PATH), token, seconds)?;
                Ok(self.row(kind, workers, load))
            }
            Kind::Nginx | Kind::Floor => {
                let proxy = if kind == Kind::Nginx {
                    servers::nginx_proxy(&self.dir, self.upstream.addr, workers)?
                } else {
                    servers::floor_proxy(&self.dir, self.upstream.addr, workers)?
                };
                self.started(kind, workers, &proxy, |p| {
                    self.same_token(&at(p.addr, ORG_PATH), p)
                })
            }
            Kind::HaproxyOne | Kind::HaproxyDistinct => {
                let haproxy = servers::haproxy(
                    &self.dir,
                    self.upstream.addr,
                    workers,
                    &self.keys.rsa_public_pem,
                )?;
                servers::preflight(haproxy.addr, SCOPE_PATH, token)?;
                self.started(kind, workers, &haproxy, |h| {
                    if kind == Kind::HaproxyOne {
                        self.same_token(&at(h.addr, SCOPE_PATH), h)
                    } else {
                        let base = format!("http://{}", h.addr);
                        self.distinct(&base, SCOPE_PATH, &Distinct::Tokens(self.tokens()?), h)
                    }
                })
            }
            Kind::ScopeCached => self.gateway(kind, plain, SCOPE_PATH, same(SCOPE_PATH)),
            Kind::OrgWarm => self.gateway(kind, plain, ORG_PATH, same(ORG_PATH)),
            Kind::ScopeDistinct | Kind::OrgDistinct | Kind::Issuers1 | Kind::Issuers100 => {
                let path = if kind == Kind::OrgDistinct {
                    ORG_PATH
                } else {
                    SCOPE_PATH
                };
                let extra_issuers = if kind == Kind::Issuers100 { 99 } else { 0 };
                let gateway = Gateway {
                    extra_issuers,
                    ..plain
                };
                let file = self.tokens()?;
                self.gateway(kind, gateway, path, |base, server| {
                    self.distinct(base, path, &Distinct::Tokens(file), server)
                })
            }
            Kind::ColdOrg | Kind::ColdOrgPostgres => {
                let count = self.settings.orgs;
                // The database is kept until the row ends: it stops when it drops.
                let (orgs, _database) = if kind == Kind::ColdOrg {
                    let file = servers::cold_orgs(&tokens::data_dir(), count)?;
                    (Orgs::File(file), None)
                } else {
                    let pg = crate::database::cold_orgs(tokens::ISSUER, count)?;
                    (Orgs::Postgres(pg.url()), Some(pg))
                };
                let gateway = Gateway {
                    orgs: Some((orgs, count)),
                    ..plain
                };
                let values = Distinct::Orgs { token, count };
                self.gateway(kind, gateway, ORG_PATH, |base, server| {
                    self.distinct(base, COLD_ORG_PATH, &values, server)
                })
            }
            Kind::Routes10 | Kind::Routes10k => {
                let extra_routes = if kind == Kind::Routes10 { 8 } else { 9_998 };
                let gateway = Gateway {
                    extra_routes,
                    ..plain
                };
                self.gateway(kind, gateway, SCOPE_PATH, same(SCOPE_PATH))
            }
            Kind::RateNginx | Kind::RateOrgWarm => {
                let nginx = self
                    .rows
                    .get(&(Kind::Nginx, workers))
                    .ok_or("no nginx row")?;
                let rate = (nginx.load.requests_per_sec / 2.0).round() as u64;
                let mut row = if kind == Kind::RateNginx {
                    let proxy = servers::nginx_proxy(&self.dir, self.upstream.addr, workers)?;
                    let load = load::fixed_rate(&at(proxy.addr, ORG_PATH), token, rate, seconds)?;
                    self.row(kind, workers, load)
                } else {
                    self.gateway(kind, plain, ORG_PATH, |base, _| {
                        load::fixed_rate(&format!("{base}{ORG_PATH}"), token, rate, seconds)
                            .map(no_cpu)
                    })?
                };
                row.note = format!("oha -q {rate} (half of nginx's {workers}-worker maximum)");
                if row.load.requests_per_sec < 0.95 * rate as f64 {
                    row.note.push_str("; DID NOT SUSTAIN the rate");
                }
                Ok(row)
            }
            Kind::Memory => self.memory(workers),
        }
    }

    /// RSS growth per cached token: one token's warm-up, RSS, every token of the ES256 file
    /// once (a 500k-entry cache), RSS again.
    fn memory(&self, workers: usize) -> Result<Row, String> {
        let count = self.settings.memory_tokens;
        let data = tokens::data_dir();
        let (file, took) =
            tokens::file(&data, "es256", &self.keys.ec, tokens::MEMORY_ISSUER, count)?;
        report_made(&file, took, "ES256");
        let gateway = Gateway {
            workers,
            memory_issuer: true,
            token_cache_entries: Some(count),
            ..Gateway::default()
        };
        let mut running = self.start(Kind::Memory, &gateway)?;
        let measured = (|| {
            servers::preflight(running.addr, SCOPE_PATH, &self.token)?;
            let url = format!("http://{}{SCOPE_PATH}", running.addr);
            let load = load::same_token(&url, &self.token, load::WARMUP)?;
            let rss = || running.rss_kib().ok_or("cannot read scopegate's RSS");
            let before = rss()?;
            let rate = load::every_token(running.addr, SCOPE_PATH, &file)?;
            std::thread::sleep(Duration::from_secs(1));
            let entries = running
                .gauge(r#"scopegate_cache_entries{cache="verified_tokens"}"#)
                .ok_or("no scopegate_cache_entries gauge")?;
            Ok::<_, String>((load, before, rate, rss()?, entries))
        })();
        let (load, before, rate, after, entries) = measured.map_err(|e| running.explain(e))?;
        if entries < count as f64 * 0.99 {
            return Err(format!(
                "the memory row is invalid: the cache holds {entries} entries of {count} tokens sent"
            ));
        }
        let per_token = (after.saturating_sub(before) * 1024) as f64 / entries;
        let mut row = self.row(
            Kind::Memory,
            workers,
            Load {
                requests_per_sec: rate,
                requests: count as u64,
                ..load
            },
        );
        row.rss_kib = Some(after);
        row.note = format!(
            "{per_token:.0} bytes/token: RSS {before} -> {after} KiB over {entries} cached tokens \
             (scopegate_cache_entries); p50/p99 are the warm-up's"
        );
        Ok(row)
    }

    fn print(&self) {
        println!(
            "\n| row | workers | req/s | p50 | p99 | ratio | vs | CPU µs/req (user + kernel) | RSS | note |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for row in self.rows.values() {
            // The upstream runs once, with its one worker: every row's anchor when compared.
            let anchor = row.kind.anchor().and_then(|a| {
                let workers = if a == Kind::Direct { 1 } else { row.workers };
                self.rows.get(&(a, workers))
            });
            let (ratio, vs) = match (row.kind, anchor) {
                (Kind::RateOrgWarm | Kind::RateNginx, _) | (_, None) => (String::new(), ""),
                (kind, Some(a)) => (
                    format!("{:.2}", row.load.requests_per_sec / a.load.requests_per_sec),
                    kind.anchor().map_or("", Kind::name),
                ),
            };
            let mut note = row.note.clone();
            match (row.kind, anchor) {
                (Kind::Routes10k | Kind::Issuers100, Some(a)) => {
                    let cost = a.load.requests_per_sec / row.load.requests_per_sec - 1.0;
                    note = format!("per-request cost {:+.1}% (req/s)", cost * 100.0);
                    // CPU per request is the steadier measure: req/s also moves with what
                    // else the 2 cores run.
                    if let (Some(c), Some(ac)) = (row.cpu, a.cpu) {
                        let cost = (c.user_us + c.system_us) / (ac.user_us + ac.system_us) - 1.0;
                        note.push_str(&format!(", {:+.1}% (CPU per request)", cost * 100.0));
                    }
                }
                (Kind::RateOrgWarm, Some(a)) => {
                    let added = row.load.p99.as_secs_f64() - a.load.p99.as_secs_f64();
                    note = format!("{note}; p99 added over nginx: {:.3} ms", added * 1e3);
                }
                _ => {}
            }
            let workers = if row.kind == Kind::Direct {
                "-".to_string()
            } else {
                row.workers.to_string()
            };
            let rss = row
                .rss_kib
                .map_or(String::new(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let cpu = row.cpu.map_or(String::new(), |c| {
                format!(
                    "{:.1} ({:.1} + {:.1})",
                    c.user_us + c.system_us,
                    c.user_us,
                    c.system_us
                )
            });
            println!(
                "| {} | {workers} | {:.0} | {} | {} | {ratio} | {vs} | {cpu} | {rss} | {note} |",
                row.kind.name(),
                row.load.requests_per_sec,
                format_latency(row.load.p50),
                format_latency(row.load.p99),
            );
        }
    }
}
