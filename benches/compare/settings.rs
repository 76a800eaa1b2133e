//! What a run measures, from the environment and the command line (`BENCH_*`, row words).

use crate::load;

/// The environment's settings of a run.
pub(crate) struct Settings {
    pub(crate) seconds: u64,
    pub(crate) only: Vec<String>,
    pub(crate) workers: Vec<usize>,
    pub(crate) tokens: usize,
    pub(crate) orgs: usize,
    pub(crate) memory_tokens: usize,
}

fn number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(format!("{name} must be a positive number, got `{v}`")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    pub(crate) fn from_env() -> Result<Self, String> {
        let list = |name: &str| {
            std::env::var(name)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        let workers = list("BENCH_WORKERS")
            .iter()
            .map(|w| w.parse().ok().filter(|n| *n > 0))
            .collect::<Option<Vec<usize>>>()
            .ok_or("BENCH_WORKERS must be a list of positive numbers, like `1,2`")?;
        // Words on the command line (`benches/run "org warm"`) select rows too; cargo's own
        // `--bench` is not one.
        let mut only = list("BENCH_ONLY");
        only.extend(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .map(|a| a.to_lowercase()),
        );
        let seconds = crate::common::bench_seconds()?;
        // Enough for a warm-up and a run at 50000 tokens/s (HAProxy reached 41000 with 2
        // threads) and 50000 organizations/s, so that no run uses them up.
        let run = (seconds + load::WARMUP) as usize;
        Ok(Self {
            seconds,
            only,
            workers: if workers.is_empty() {
                vec![1, 2]
            } else {
                workers
            },
            tokens: number("BENCH_TOKENS", (50_000 * run).max(600_000))?,
            orgs: number("BENCH_ORGS", (50_000 * run).max(600_000))?,
            memory_tokens: number("BENCH_MEMORY_TOKENS", 500_000)?,
        })
    }
}
