//! The processes of a row: the upstream nginx, the anchors (nginx proxy, HAProxy) from the
//! templates in `benches/anchors/`, and the release scopegate binary on a generated config.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Server, wait_for_listener};
use crate::tokens::{AUDIENCE, ISSUER, MEMORY_ISSUER, SCOPE};

/// A started server: its address and process (stopped on drop).
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    /// scopegate's admin listener (metrics), for scopegate rows.
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) server: Server,
    /// Its standard error.
    log: PathBuf,
}

impl Running {
    /// A scopegate gauge `name{labels}` from its admin listener's metrics.
    pub(crate) fn gauge(&self, series: &str) -> Option<f64> {
        let (status, body) = get(self.admin?, "/metrics", None).ok()?;
        (status == 200).then_some(())?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The process's resident set size now, in KiB (`VmRSS` of /proc/<pid>/status).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.server.0.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time spent so far by the process and every live process below it (nginx's
    /// workers are its master's children).
    pub(crate) fn ticks(&self) -> Option<Ticks> {
        process_tree_ticks(self.server.0.id())
    }

    /// `error`, with whether the process is still running and the end of its log.
    pub(crate) fn explain(&mut self, error: String) -> String {
        let state = match self.server.0.try_wait() {
            Ok(Some(status)) => format!("it exited: {status}"),
            _ => "it is still running".to_string(),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{error}\n({state}; the end of {}:)\n{}",
            self.log.display(),
            tail.join("\n")
        )
    }
}

/// CPU time in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ticks {
    user: u64,
    system: u64,
}

/// Microseconds of CPU per request, in user space and in the kernel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) user_us: f64,
    pub(crate) system_us: f64,
}

impl Ticks {
    /// The CPU spent per request between `self` and `later` over `requests` requests.
    pub(crate) fn per_request(self, later: Ticks, requests: u64) -> Option<Cpu> {
        let tick_us = 1e6 / clock_ticks_per_second() as f64;
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 * tick_us / requests as f64;
        (requests > 0).then(|| Cpu {
            user_us: per(self.user, later.user),
            system_us: per(self.system, later.system),
        })
    }
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The ticks of `root` and its live descendants, from every `/proc/<pid>/stat`.
fn process_tree_ticks(root: u32) -> Option<Ticks> {
    // (pid, parent, ticks) of every process; the command name is in parentheses and may hold
    // spaces, so the fields are counted after its closing parenthesis.
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state (3), ppid (4), ..., utime (14), stime (15).
        let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
        if let (Some(parent), Some(user), Some(system)) = (number(4), number(14), number(15)) {
            all.push((pid, parent as u32, Ticks { user, system }));
        }
    }
    let mut tree = vec![root];
    let mut total = Ticks::default();
    let mut found = false;
    let mut i = 0;
    while i < tree.len() {
        for (pid, parent, ticks) in &all {
            if *pid == tree[i] {
                found = true;
                total.user += ticks.user;
                total.system += ticks.system;
            } else if *parent == tree[i] {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    found.then_some(total)
}

/// A free loopback port (bound, read, released: the server binds it right after).
pub(crate) fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

fn anchors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/anchors")
}

/// The template `name` for a server on `addr` with each `{{KEY}}` replaced: `DIR` (the run's
/// folder), `PORT` and `fields`; a field left over is an error.
fn fill(
    name: &str,
    dir: &Path,
    addr: SocketAddr,
    fields: &[(&str, String)],
) -> Result<String, String> {
    let path = anchors().join(name);
    let mut text =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let common = [
        ("DIR", dir.display().to_string()),
        ("PORT", addr.port().to_string()),
    ];
    for (key, value) in common.iter().chain(fields) {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    match text.find("{{") {
        Some(at) => Err(format!(
            "{name}: unfilled field near `{}`",
            &text[at..at + 20]
        )),
        None => Ok(text),
    }
}

fn spawn(
    mut command: Command,
    addr: SocketAddr,
    what: &str,
    log: &Path,
) -> Result<Running, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = command
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let server = Server(child);
    if !wait_for_listener(addr) {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!("{what} did not listen on {addr}:\n{log}"));
    }
    Ok(Running {
        addr,
        admin: None,
        server,
        log: log.to_path_buf(),
    })
}

/// nginx on `conf` (a filled template written to `dir/file`).
fn nginx(
    dir: &Path,
    file: &str,
    conf: &str,
    addr: SocketAddr,
    what: &str,
) -> Result<Running, String> {
    let path = dir.join(file);
    std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut command = Command::new("nginx");
    command
        .args(["-p", &dir.display().to_string(), "-c"])
        .arg(&path);
    command.arg("-e").arg(dir.join(format!("{file}.log")));
    spawn(command, addr, what, &dir.join(format!("{file}.stderr")))
}

/// The one-worker nginx every row ends at: 200 "ok\n", and `/jwks.json` with `jwks`.
pub(crate) fn upstream(dir: &Path, jwks: &str) -> Result<Running, String> {
    std::fs::write(dir.join("jwks.json"), jwks).map_err(|e| e.to_string())?;
    let addr = free_addr()?;
    let conf = fill("upstream.conf", dir, addr, &[])?;
    nginx(dir, "upstream.conf", &conf, addr, "the upstream nginx")
}

/// The plain reverse proxy anchor with `workers` worker processes.
pub(crate) fn nginx_proxy(
    dir: &Path,
    upstream: SocketAddr,
    workers: usize,
) -> Result<Running, String> {
    let addr = free_addr()?;
    let fields = [
        ("UPSTREAM", upstream.to_string()),
        ("WORKERS", workers.to_string()),
    ];
    let conf = fill("nginx-proxy.conf", dir, addr, &fields)?;
    nginx(dir, "nginx-proxy.conf", &conf, addr, "the nginx proxy")
}

/// The floor proxy (`floor.rs`) with `workers` threads: this bench binary run as a child.
pub(crate) fn floor_proxy(
    dir: &Path,
    upstream: SocketAddr,
    workers: usize,
) -> Result<Running, String> {
    let addr = free_addr()?;
    let exe = std::env::current_exe().map_err(|e| format!("no path to this bench: {e}"))?;
    let mut command = Command::new(exe);
    command.args([
        crate::floor::ARG,
        &addr.to_string(),
        &upstream.to_string(),
        &workers.to_string(),
    ]);
    spawn(command, addr, "the floor proxy", &dir.join("floor.stderr"))
}

/// HAProxy verifying the RS256 token itself, with `workers` threads.
pub(crate) fn haproxy(
    dir: &Path,
    upstream: SocketAddr,
    workers: usize,
    public_key: &Path,
) -> Result<Running, String> {
    let addr = free_addr()?;
    let fields = [
        ("UPSTREAM", upstream.to_string()),
        ("WORKERS", workers.to_string()),
        ("PUBKEY", public_key.display().to_string()),
        ("ISSUER", ISSUER.to_string()),
        ("AUDIENCE", AUDIENCE.to_string()),
    ];
    let conf = fill("haproxy.cfg", dir, addr, &fields)?;
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    validate("haproxy", &["-c", "-f"], &path)?;
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    spawn(command, addr, "haproxy", &dir.join("haproxy.stderr"))
}

/// Has `program args config` (a config check) accept the generated `config` before it runs.
fn validate(program: &str, args: &[&str], config: &Path) -> Result<(), String> {
    let check = Command::new(program)
        .args(args)
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if check.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` refused {}:\n{}{}",
        args.join(" "),
        config.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    ))
}

/// What a scopegate row runs on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gateway {
    pub(crate) workers: usize,
    /// Routes besides the two measured ones (`/builds/{id}` and `/orgs/{org}/builds`).
    pub(crate) extra_routes: usize,
    /// Issuers besides `bench`, listed before it (same JWKS, other `issuer:` URLs).
    pub(crate) extra_issuers: usize,
    /// The ES256 issuer of the memory row.
    pub(crate) memory_issuer: bool,
    pub(crate) token_cache_entries: Option<usize>,
    /// Many organizations (the cold org rows) and how many.
    pub(crate) orgs: Option<(Orgs, usize)>,
}

/// Where the cold org rows' organizations are.
#[derive(Debug, Clone)]
pub(crate) enum Orgs {
    /// A permissions data file.
    File(PathBuf),
    /// A PostgreSQL database (its URL), read by the `postgres` backend.
    Postgres(String),
}

impl Gateway {
    fn server_yaml(
        &self,
        dir: &Path,
        proxy: SocketAddr,
        admin: SocketAddr,
        upstream: SocketAddr,
    ) -> String {
        let jwks = format!("http://{upstream}/jwks.json");
        let workers = self.workers;
        let mut y = format!(
            "listen: {{ proxy: \"{proxy}\", admin: \"{admin}\" }}\n\
             workers: {workers}\n\
             policies: [policy.yaml]\n\
             log: {{ format: json, level: info }}\n\
             signing: {{ issuer: \"http://127.0.0.1/bench-gateway\", keys: [{{ kid: gw, generate: true }}] }}\n\
             upstreams:\n  up:\n    url: http://{upstream}\n\
             issuers:\n"
        );
        let issuer = |y: &mut String, name: &str, url: &str, alg: &str| {
            let _ = write!(
                y,
                "  {name}:\n    issuer: \"{url}\"\n    jwks_url: {jwks}\n    algorithms: [{alg}]\n    \
                 audiences: [{AUDIENCE}]\n    max_token_age: 1000h\n"
            );
        };
        for n in 1..=self.extra_issuers {
            issuer(
                &mut y,
                &format!("other{n}"),
                &format!("https://idp{n}.other.example/"),
                "RS256",
            );
        }
        issuer(&mut y, "bench", ISSUER, "RS256");
        if self.memory_issuer {
            issuer(&mut y, "memory", MEMORY_ISSUER, "ES256");
        }
        match &self.orgs {
            Some((orgs, count)) => {
                let source = match orgs {
                    Orgs::File(file) => format!("files: [{}]", file.display()),
                    Orgs::Postgres(url) => format!("postgres: {{ url: \"{url}\", pool_size: 16 }}"),
                };
                let _ = write!(
                    y,
                    "permissions:\n  {source}\n  cache_entries: {count}\n  \
                     miss_budget: {{ per_second: 100000, burst: 1000000, concurrency: 1024 }}\n",
                );
            }
            None => {
                std::fs::write(dir.join("orgs.yaml"), warm_orgs()).ok();
                y.push_str("permissions:\n  files: [orgs.yaml]\n");
            }
        }
        if let Some(n) = self.token_cache_entries {
            let _ = writeln!(y, "limits:\n  token_cache_entries: {n}");
        }
        y
    }

    fn policy_yaml(&self) -> String {
        let mut y = format!(
            "roles:\n  builder: [{SCOPE}]\nroutes:\n\
             \x20 - name: scope\n    match: {{ method: GET, path: \"/builds/{{id}}\" }}\n    upstream: up\n    require: {{ scopes: [{SCOPE}] }}\n\
             \x20 - name: org\n    match: {{ method: GET, path: \"/orgs/{{org}}/builds\" }}\n    upstream: up\n    \
             organization: {{ from: path, param: org }}\n    require: {{ scopes: [{SCOPE}] }}\n"
        );
        for n in 0..self.extra_routes {
            let _ = write!(
                y,
                "  - name: filler-{n}\n    match: {{ method: GET, path: \"/svc{n}/items/{{id}}\" }}\n    \
                 upstream: up\n    require: {{ scopes: [{SCOPE}] }}\n"
            );
        }
        y
    }

    /// Writes the config to `dir`, has `scopegate check` accept it, starts `scopegate serve`
    /// and waits until it is ready (its issuers' keys loaded).
    pub(crate) fn start(&self, dir: &Path, upstream: SocketAddr) -> Result<Running, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let (proxy, admin) = (free_addr()?, free_addr()?);
        let config = dir.join("scopegate.yaml");
        std::fs::write(&config, self.server_yaml(dir, proxy, admin, upstream))
            .map_err(|e| e.to_string())?;
        std::fs::write(dir.join("policy.yaml"), self.policy_yaml()).map_err(|e| e.to_string())?;
        let binary = env!("CARGO_BIN_EXE_scopegate");
        validate(binary, &["check", "--config"], &config)?;
        let mut command = Command::new(binary);
        command.arg("serve").arg("--config").arg(&config);
        let log = dir.join("scopegate.log");
        let mut running = spawn(command, proxy, "scopegate", &log)?;
        running.admin = Some(admin);
        for _ in 0..600 {
            if get(admin, "/readyz", None).is_ok_and(|(status, _)| status == 200) {
                return Ok(running);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!("scopegate did not become ready in 60 s:\n{log}"))
    }
}

/// The permissions of the warm rows: `bench` is a builder in `acme`.
fn warm_orgs() -> String {
    "issuer: bench\norganizations:\n  acme:\n    members:\n      bench: { roles: [builder] }\n"
        .into()
}

/// A permissions file where `bench` is a builder in `acme` and in `o0000000`..`o{count-1}`,
/// kept in `dir` and reused.
pub(crate) fn cold_orgs(dir: &Path, count: usize) -> Result<PathBuf, String> {
    let path = dir.join(format!("orgs-{count}.yaml"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(path);
    }
    let mut y = warm_orgs();
    for n in 0..count {
        let _ = writeln!(
            y,
            "  o{n:07}: {{ members: {{ bench: {{ roles: [builder] }} }} }}"
        );
    }
    std::fs::write(&path, y).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// One GET over a fresh connection: the status and body.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer: {answer:.200}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A row's server must answer 200 with the upstream's body for `token` and 401 without one:
/// a benchmark of refusals is impossible.
pub(crate) fn preflight(addr: SocketAddr, path: &str, token: &str) -> Result<(), String> {
    let (status, body) = get(addr, path, Some(token))?;
    if status != 200 || !body.contains("ok") {
        return Err(format!(
            "GET {path} with a valid token answered {status}: {body:.300}"
        ));
    }
    let (status, _) = get(addr, path, None)?;
    if status != 401 {
        return Err(format!(
            "GET {path} without a token answered {status}, not 401"
        ));
    }
    Ok(())
}
