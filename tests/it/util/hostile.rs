//! A hostile upstream: a raw TCP server that records the exact bytes of every request it gets
//! (head and body), answers `200 ok`, and lets a test assert on what scopegate really forwarded,
//! byte for byte, and replay it to real framework parsers (`util::parsers`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The recording upstream; it stops when dropped.
pub struct Hostile {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One forwarded request as it came off the wire.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub raw: Vec<u8>,
}

impl Forwarded {
    /// The head as text (scopegate forwards ASCII heads only).
    pub fn head(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |i| i);
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    /// The request line: method, target, version.
    pub fn request_line(&self) -> (String, String, String) {
        let head = self.head();
        let line = head.lines().next().unwrap_or_default().to_string();
        let mut parts = line.splitn(3, ' ').map(str::to_string);
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        )
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// Every header name, lower-cased, in order.
    pub fn header_names(&self) -> Vec<String> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Hostile {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // One request per connection: enough for what scopegate forwards here.
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = find(&buf, b"\r\n\r\n")
                            && buf.len() >= end + 4 + content_length(&buf[..end])
                        {
                            break;
                        }
                    }
                    record.lock().unwrap().push(buf);
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Everything received so far, oldest first, and forgets it.
    pub fn take(&self) -> Vec<Forwarded> {
        std::mem::take(&mut *self.seen.lock().unwrap())
            .into_iter()
            .map(|raw| Forwarded { raw })
            .collect()
    }

    /// The one request received since the last `take`.
    #[track_caller]
    pub fn only(&self) -> Forwarded {
        let mut all = self.take();
        assert_eq!(all.len(), 1, "expected exactly one forwarded request");
        all.remove(0)
    }
}
