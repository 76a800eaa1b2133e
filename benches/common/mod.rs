//! What the load-generator benches share: running and reading `wrk`, latency notation, the
//! measured duration from `BENCH_SECONDS`, and child servers stopped on drop.

use std::process::{Child, Command};
use std::time::Duration;

/// What one wrk run reported.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) requests: u64,
}

/// `BENCH_SECONDS` (a positive whole number, default 10): the measured duration of one run.
pub(crate) fn bench_seconds() -> Result<u64, String> {
    match std::env::var("BENCH_SECONDS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(s),
            _ => Err(format!(
                "BENCH_SECONDS must be a positive whole number of seconds, got `{v}`"
            )),
        },
        Err(_) => Ok(10),
    }
}

/// Whether `program` is an executable on PATH.
pub(crate) fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs wrk with `args` (the URL last) and parses its report; any non-2xx answer or socket
/// error fails the run. Also returns wrk's whole standard output, for what a script printed.
pub(crate) fn wrk(args: &[String]) -> Result<(Load, String), String> {
    let output = Command::new("wrk")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk exited with {}:\n{report}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let load = parse_wrk(&report).map_err(|e| format!("{e}; wrk's report was:\n{report}"))?;
    Ok((load, report))
}

pub(crate) fn parse_wrk(report: &str) -> Result<Load, String> {
    let mut requests_per_sec = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => requests_per_sec = v.parse::<f64>().ok(),
            ["50%", v] => p50 = parse_duration(v),
            ["99%", v] => p99 = parse_duration(v),
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                return Err(format!("{n} answers were not 2xx/3xx"));
            }
            ["Socket", "errors:", ..] => return Err(format!("socket errors: {}", line.trim())),
            _ => {}
        }
    }
    match (requests_per_sec, p50, p99, requests) {
        (Some(requests_per_sec), Some(p50), Some(p99), Some(requests)) if requests > 0 => {
            Ok(Load {
                requests_per_sec,
                p50,
                p99,
                requests,
            })
        }
        _ => Err("cannot find Requests/sec, the 50%/99% latencies or the request count".into()),
    }
}

/// wrk's latency notation: `812.00us`, `1.23ms`, `1.05s`, `2.00m`.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

pub(crate) fn format_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}us")
    } else {
        format!("{:.2}ms", us / 1000.0)
    }
}

/// A server process of the bench (nginx, HAProxy, scopegate), stopped on drop.
#[derive(Debug)]
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets nginx's master stop its workers; `Child::kill` (SIGKILL) would orphan
        // them, and every run would leave idle workers behind.
        let stopped = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits up to five seconds until something accepts connections on `addr`.
pub(crate) fn wait_for_listener(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
