//! Real framework parsers (Flask/Werkzeug from PyPI, Express from npm; see tests/parsers/):
//! each runs as a child process on a loopback port, and a test replays the exact bytes
//! scopegate forwarded to learn what that framework thinks the method, path, host, query and
//! headers are.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running framework server; it exits when its stdin closes (on drop).
pub struct Framework {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
}

impl Drop for Framework {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, program: &str, script: &str) -> Framework {
    let path = super::repo().join("tests/parsers").join(script);
    let mut child = Command::new(program)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {program} {}: {e}; run scripts/test",
                path.display()
            )
        });
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!("{name} did not start (install its packages with scripts/test): {line:?}")
        });
    Framework {
        name,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        _stdin: stdin,
    }
}

/// Flask on Werkzeug's own server.
pub fn flask() -> Framework {
    spawn("flask", "python3", "flask_app.py")
}

/// Express on Node's `http`.
pub fn express() -> Framework {
    spawn("express", "node", "node_app.js")
}

impl Framework {
    /// Replays `raw` (one request as scopegate forwarded it) and returns what the framework
    /// parsed, or `None` when its own HTTP parser refused the request.
    pub async fn parse(&self, raw: &[u8]) -> Option<Value> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        // scopegate forwards with keep-alive; one request per connection here.
        stream.write_all(raw).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&chunk[..n]);
                        if complete(&answer) {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{} did not answer", self.name);
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        serde_json::from_str(body.trim()).ok()
    }
}

/// Whether `answer` holds a whole response with a Content-Length body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}
