//! The bench's keys and tokens, made once and kept under `target/bench-data/`: an RSA-2048 key
//! (RS256, shared by HAProxy and scopegate), a P-256 key (ES256, the memory row's second issuer),
//! the JWKS publishing both, and files of distinct tokens, one per fixed-width line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use jsonwebtoken::Algorithm;
use scopegate::keys::SigningKey;
use serde_json::json;

pub(crate) const AUDIENCE: &str = "scopegate-bench";
/// `iss` of the RS256 tokens (scopegate's issuer `bench`, HAProxy's accepted issuer).
pub(crate) const ISSUER: &str = "https://idp.bench.example/";
/// `iss` of the ES256 tokens of the memory row.
pub(crate) const MEMORY_ISSUER: &str = "https://idp-es256.bench.example/";
pub(crate) const SCOPE: &str = "read:builds";
/// Tokens live this long, and are made again when less than `RENEW_BEFORE` of it is left.
const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The two keys, with the files the servers read.
pub(crate) struct Keys {
    pub(crate) rsa: SigningKey,
    pub(crate) ec: SigningKey,
    /// The RSA public key as SubjectPublicKeyInfo PEM (HAProxy's `jwt_verify`).
    pub(crate) rsa_public_pem: PathBuf,
    /// `{"keys": [rsa, ec]}`: what the upstream nginx serves as `/jwks.json`.
    pub(crate) jwks: String,
}

/// A file of `count` distinct tokens, each on a line of `width` bytes (newline included).
#[derive(Debug, Clone)]
pub(crate) struct TokenFile {
    pub(crate) path: PathBuf,
    pub(crate) count: usize,
    pub(crate) width: usize,
}

pub(crate) fn data_dir() -> PathBuf {
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp`.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("bench-data")
}

/// Loads the keys from `dir`, or makes and saves them the first time.
pub(crate) fn keys(dir: &Path) -> Result<Keys, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rsa = key(dir, "bench-rs256", Algorithm::RS256)?;
    let ec = key(dir, "bench-es256", Algorithm::ES256)?;
    let der = rustls_pemfile_der(&rsa.private_pem())?;
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).map_err(|_| "the RSA key is unusable")?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| "cannot encode the RSA public key")?;
    let rsa_public_pem = dir.join("bench-rs256.pub.pem");
    write(
        &rsa_public_pem,
        pem("PUBLIC KEY", public.as_ref()).as_bytes(),
    )?;
    let jwks = scopegate::keys::jwks([&rsa, &ec]).to_string();
    Ok(Keys {
        rsa,
        ec,
        rsa_public_pem,
        jwks,
    })
}

fn key(dir: &Path, kid: &str, alg: Algorithm) -> Result<SigningKey, String> {
    let path = dir.join(format!("{kid}.pem"));
    if let Ok(pem) = std::fs::read(&path) {
        return SigningKey::from_pem(kid, alg, &pem)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let key = SigningKey::generate(kid, alg).map_err(|e| e.to_string())?;
    write(&path, key.private_pem().as_bytes())?;
    Ok(key)
}

fn rustls_pemfile_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.secret_pkcs8_der().to_vec())
        .map_err(|e| format!("the RSA key's PEM: {e}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims of token number `n` (`None`: the one shared token of the cached rows).
fn claims(issuer: &str, iat: u64, n: Option<usize>) -> serde_json::Value {
    let mut claims = json!({
        "iss": issuer, "sub": "bench", "aud": AUDIENCE, "scope": SCOPE,
        "iat": iat, "exp": iat + LIFETIME.as_secs(),
    });
    if let Some(n) = n {
        // Fixed width: every token of a file has the same length, so a line is found by seeking.
        claims["jti"] = json!(format!("{n:09}"));
    }
    claims
}

/// One token, the same on every request of a cached row.
pub(crate) fn single(key: &SigningKey, issuer: &str) -> Result<String, String> {
    key.sign("JWT", &claims(issuer, now(), None))
        .map_err(|e| e.to_string())
}

/// The file `name` of `count` distinct tokens by `key` for `issuer`: reused when it has as
/// many tokens of this key and issuer and they are far from expiry, otherwise made on every
/// core. Returns the file and, when it was made now, how long that took.
pub(crate) fn file(
    dir: &Path,
    name: &str,
    key: &SigningKey,
    issuer: &str,
    count: usize,
) -> Result<(TokenFile, Option<Duration>), String> {
    let path = dir.join(format!("{name}-{count}.tokens"));
    let meta_path = dir.join(format!("{name}-{count}.json"));
    let meta_wanted = json!({ "count": count, "issuer": issuer, "jwk": key.public_jwk() });
    if let Ok(text) = std::fs::read_to_string(&meta_path)
        && let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text)
        && meta["made_for"] == meta_wanted
        && meta["exp"].as_u64().unwrap_or(0) > now() + RENEW_BEFORE.as_secs()
        && let Some(width) = meta["width"].as_u64()
        && std::fs::metadata(&path).is_ok_and(|m| m.len() == width * count as u64)
    {
        let width = width as usize;
        return Ok((TokenFile { path, count, width }, None));
    }
    let started = Instant::now();
    let iat = now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_core = count.div_ceil(cores);
    let chunks: Vec<Result<Vec<u8>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..cores)
            .map(|c| {
                let range = (c * per_core).min(count)..((c + 1) * per_core).min(count);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for n in range {
                        let token = key
                            .sign("JWT", &claims(issuer, iat, Some(n)))
                            .map_err(|e| e.to_string())?;
                        out.extend_from_slice(token.as_bytes());
                        out.push(b'\n');
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect()
    });
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut width = None;
    for chunk in chunks {
        let chunk = chunk?;
        for line in chunk.split_inclusive(|b| *b == b'\n') {
            if *width.get_or_insert(line.len()) != line.len() {
                return Err("the tokens are not all of one length".into());
            }
        }
        out.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    let width = width.unwrap_or(1);
    let meta = json!({ "made_for": meta_wanted, "exp": iat + LIFETIME.as_secs(), "width": width });
    write(&meta_path, meta.to_string().as_bytes())?;
    Ok((TokenFile { path, count, width }, Some(started.elapsed())))
}
