//! The load generators: wrk at full speed (one header, or a distinct value per request through
//! `distinct.lua`) and oha at a fixed rate. Any answer that is not 2xx fails the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Load};
use crate::tokens::TokenFile;

pub(crate) const CONNECTIONS: u32 = 32;
pub(crate) const WARMUP: u64 = 2;

fn wrk_args(seconds: u64) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--latency".into(),
    ]
}

/// wrk with the same token on every request: a warm-up, then the measured run.
pub(crate) fn same_token(url: &str, token: &str, seconds: u64) -> Result<Load, String> {
    same_token_probed(url, token, seconds, || ()).map(|(load, ..)| load)
}

/// [`same_token`], reading `probe` just before and just after the measured run.
pub(crate) fn same_token_probed<T>(
    url: &str,
    token: &str,
    seconds: u64,
    mut probe: impl FnMut() -> T,
) -> Result<(Load, T, T), String> {
    let run = |s| {
        let mut args = wrk_args(s);
        args.extend([
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            url.into(),
        ]);
        common::wrk(&args).map(|(load, _)| load)
    };
    run(WARMUP)?;
    let before = probe();
    let load = run(seconds)?;
    Ok((load, before, probe()))
}

/// Where a distinct-value run takes its values.
pub(crate) enum Distinct<'a> {
    /// A token of the file on each request.
    Tokens(&'a TokenFile),
    /// The same token, and organization number n (`%07d` in the path) on request n.
    Orgs { token: &'a str, count: usize },
}

impl Distinct<'_> {
    fn args(&self, path: &str, first: usize) -> Vec<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare/distinct.lua");
        let (mode, limit, source, width) = match self {
            Distinct::Tokens(f) => ("tokens", f.count, f.path.display().to_string(), f.width),
            Distinct::Orgs { token, count } => ("orgs", *count, (*token).to_string(), 0),
        };
        vec![
            "-s".into(),
            script.display().to_string(),
            String::new(), // the URL goes here
            "--".into(),
            mode.into(),
            path.into(),
            first.to_string(),
            limit.to_string(),
            source,
            width.to_string(),
        ]
    }

    fn count(&self) -> usize {
        match self {
            Distinct::Tokens(f) => f.count,
            Distinct::Orgs { count, .. } => *count,
        }
    }
}

/// One wrk run from value `first` on; returns its load and how many values it used.
fn distinct_run(
    base: &str,
    path: &str,
    values: &Distinct<'_>,
    first: usize,
    seconds: u64,
) -> Result<(Load, usize), String> {
    let mut args = wrk_args(seconds);
    let mut script = values.args(path, first);
    script[2] = format!("{base}{}", path.replace("%07d", "0000000"));
    args.extend(script);
    let exhausted = |count| {
        format!(
            "the run used up all {count} distinct values: this row is invalid; make more \
             (BENCH_TOKENS / BENCH_ORGS) and run it again"
        )
    };
    // The requests after the last value go without a token: wrk's error is theirs.
    let (load, report) = common::wrk(&args).map_err(|e| {
        if e.contains("exhausted: 1") {
            exhausted(values.count())
        } else {
            e
        }
    })?;
    let used = report
        .lines()
        .find_map(|l| l.strip_prefix("distinct values used: "))
        .and_then(|rest| {
            let (used, exhausted) = rest.split_once(" exhausted: ")?;
            Some((used.parse::<usize>().ok()?, exhausted.trim() == "1"))
        });
    match used {
        Some((_, true)) => Err(exhausted(values.count())),
        Some((used, false)) => Ok((load, used)),
        None => Err(format!("distinct.lua printed no count:\n{report}")),
    }
}

/// wrk with a value never sent before on every request, warm-up included. `base` is
/// `http://host:port`; `path` has `%07d` for an organization number.
/// `probe` is read just before and just after the measured run.
pub(crate) fn distinct_probed<T>(
    base: &str,
    path: &str,
    values: &Distinct<'_>,
    seconds: u64,
    mut probe: impl FnMut() -> T,
) -> Result<(Load, T, T), String> {
    let (_, used) = distinct_run(base, path, values, 0, WARMUP)?;
    let before = probe();
    let (load, _) = distinct_run(base, path, values, used, seconds)?;
    Ok((load, before, probe()))
}

/// Sends every token of `file` once, from `CONNECTIONS` keep-alive connections (the memory
/// row: wrk cannot stop after a number of requests). Every answer must be 200. Returns the
/// requests per second.
pub(crate) fn every_token(addr: SocketAddr, path: &str, file: &TokenFile) -> Result<f64, String> {
    let tokens = std::fs::read(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?;
    let lines: Vec<&[u8]> = tokens.chunks(file.width).collect();
    let per_connection = lines.len().div_ceil(CONNECTIONS as usize);
    let started = Instant::now();
    std::thread::scope(|s| {
        let senders: Vec<_> = lines
            .chunks(per_connection)
            .map(|tokens| s.spawn(move || send(addr, path, tokens)))
            .collect();
        senders
            .into_iter()
            .try_for_each(|t| t.join().unwrap_or_else(|_| Err("a sender panicked".into())))
    })?;
    Ok(lines.len() as f64 / started.elapsed().as_secs_f64())
}

/// One connection sending each token (a line with its newline) in turn.
fn send(addr: SocketAddr, path: &str, tokens: &[&[u8]]) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut line = String::new();
    for token in tokens {
        let token = token.strip_suffix(b"\n").unwrap_or(token);
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer ").into_bytes();
        request.extend_from_slice(token);
        request.extend_from_slice(b"\r\n\r\n");
        writer.write_all(&request).map_err(|e| e.to_string())?;
        let mut length = None;
        let mut status = None;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("the gateway closed the connection".into());
            }
            let l = line.trim_end();
            if status.is_none() {
                status = l.split_whitespace().nth(1).map(str::to_string);
            } else if l.is_empty() {
                break;
            } else if let Some((name, value)) = l.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        if status.as_deref() != Some("200") {
            return Err(format!("an answer was {status:?}, not 200"));
        }
        let mut body = vec![0; length.ok_or("an answer without Content-Length")?];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// oha at `rate` requests/s (latency corrected for coordinated omission): a warm-up, then
/// the measured run. Any status but 200 or any error fails it.
pub(crate) fn fixed_rate(url: &str, token: &str, rate: u64, seconds: u64) -> Result<Load, String> {
    let run = |s: u64| -> Result<Load, String> {
        let output = Command::new("oha")
            .args([
                "-z".into(),
                format!("{s}s"),
                "-c".into(),
                CONNECTIONS.to_string(),
                "-q".into(),
                rate.to_string(),
                "--latency-correction".into(),
                // Requests in flight at the deadline are waited for, not counted as errors.
                "-w".into(),
                "--no-tui".into(),
                "--output-format".into(),
                "json".into(),
                "-H".into(),
                format!("Authorization: Bearer {token}"),
                url.into(),
            ])
            .output()
            .map_err(|e| format!("cannot run oha: {e}"))?;
        let report = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "oha exited with {}:\n{report}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        parse_oha(&report).map_err(|e| format!("{e}; oha's report was:\n{report:.2000}"))
    };
    run(WARMUP)?;
    run(seconds)
}

fn parse_oha(report: &str) -> Result<Load, String> {
    let json: serde_json::Value =
        serde_json::from_str(report).map_err(|e| format!("not JSON: {e}"))?;
    let codes = json["statusCodeDistribution"]
        .as_object()
        .ok_or("no statusCodeDistribution")?;
    let mut requests = 0;
    for (code, n) in codes {
        let n = n.as_u64().unwrap_or(0);
        if !code.starts_with('2') && n > 0 {
            return Err(format!("{n} answers were {code}"));
        }
        requests += n;
    }
    if let Some(errors) = json["errorDistribution"].as_object()
        && !errors.is_empty()
    {
        return Err(format!("errors: {errors:?}"));
    }
    let seconds = |v: &serde_json::Value| v.as_f64().map(Duration::from_secs_f64);
    let percentiles = &json["latencyPercentiles"];
    match (
        json["summary"]["requestsPerSec"].as_f64(),
        seconds(&percentiles["p50"]),
        seconds(&percentiles["p99"]),
    ) {
        (Some(requests_per_sec), Some(p50), Some(p99)) if requests > 0 => Ok(Load {
            requests_per_sec,
            p50,
            p99,
            requests,
        }),
        _ => Err("cannot find requestsPerSec, p50, p99 or any answer".into()),
    }
}
