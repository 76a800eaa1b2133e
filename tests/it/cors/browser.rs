//! CORS with a real browser: headless Chromium loads a page from one loopback origin, and the
//! page calls the API through scopegate on another origin with an `Authorization` header (so
//! every call is preflighted). The page writes what each `fetch` saw into the DOM, which
//! Chromium dumps (`--dump-dom`) once the page's work is done.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::start_with;
use crate::util::metrics;

/// The longest one Chromium run may take before the test fails (it takes about a second).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Chromium, killed (with its wait) when dropped, so a failed or timed-out test leaves nothing.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Loads `url` in a fresh headless Chromium and returns the DOM after the page's scripts ran.
fn dump_dom(url: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`chromium` is not installed: run `scripts/test`, which installs it (apt-get install chromium)"
    );
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let profile = std::env::temp_dir().join(format!(
        "scopegate-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&profile);
    let mut browser = Browser(
        Command::new("chromium")
            .args([
                "--headless",
                // Root in CI: Chromium's sandbox needs user namespaces it may not have.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                &format!("--user-data-dir={}", profile.display()),
                // Virtual time stands still while requests are in flight, so this bounds only
                // the page's own timers.
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ])
            .env("HOME", &profile)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts"),
    );
    let mut stdout = browser.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = browser.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within {BROWSER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = reader.join().unwrap();
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium failed ({status}); DOM: {dom}");
    dom
}

/// What each call of the page saw, read from the dumped DOM.
fn results(dom: &str) -> Vec<Value> {
    let start = dom
        .find("<pre id=\"out\">")
        .unwrap_or_else(|| panic!("no results in {dom}"))
        + "<pre id=\"out\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    serde_json::from_str(&dom[start..end])
        .unwrap_or_else(|e| panic!("the page did not finish ({e}): {}", &dom[start..end]))
}

/// A page that makes `calls` (name, method, path, token) to `api` one after another, each with
/// `Authorization: Bearer <token>`, and writes what each `fetch` saw into `<pre id="out">` as
/// JSON (`<`, `>`, `&` escaped, so the DOM dump holds it verbatim).
fn page(api: SocketAddr, calls: &Value) -> String {
    format!(
        r#"<!doctype html>
<html><body><pre id="out">pending</pre><script>
const api = "http://{api}";
const calls = {calls};
async function call([name, method, path, token]) {{
  try {{
    const r = await fetch(api + path, {{ method, headers: {{ Authorization: "Bearer " + token }} }});
    return {{ name, status: r.status, body: await r.text(),
             challenge: r.headers.get("WWW-Authenticate"), upstream: r.headers.get("X-Upstream") }};
  }} catch (e) {{
    return {{ name, error: e.name }};
  }}
}}
(async () => {{
  const seen = [];
  for (const c of calls) seen.push(await call(c));
  document.getElementById("out").textContent = JSON.stringify(seen)
    .replace(/&/g, "\\u0026").replace(/</g, "\\u003c").replace(/>/g, "\\u003e");
}})();
</script></body></html>"#
    )
}

/// Serves `html` for every request on `listener` until `stop` turns true.
fn serve_page(listener: TcpListener, html: String, stop: watch::Receiver<bool>) {
    let html = Bytes::from(html);
    scopegate::serve::spawn_listener(listener, None, stop, None, move |_, _| {
        let html = html.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("content-type", "text/html; charset=utf-8")
                    .header("cache-control", "no-store")
                    .body(Full::new(html))
                    .unwrap(),
            )
        }
    });
}

fn find<'a>(seen: &'a [Value], name: &str) -> &'a Value {
    seen.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {seen:?}"))
}

#[tokio::test]
async fn a_page_on_another_origin_reads_answers_and_refusals_through_scopegate() {
    let allowed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", allowed.local_addr().unwrap());
    let other_origin = format!("http://{}", other.local_addr().unwrap());
    let (h, rec) = start_with(&format!("cors:\n  allow_origins: [\"{page_origin}\"]\n")).await;
    let api = h.gateway.proxy_addr;
    let calls = json!([
        ["ok", "GET", "/items", h.token("read:items")],
        ["put", "PUT", "/items/7", h.token("write:items")],
        ["forbidden", "GET", "/items", h.token("write:items")],
        ["unauthorized", "GET", "/items", "not-a-jwt"],
        ["other-policy", "GET", "/reports", h.token("read:items")],
    ]);
    let (stop, stopped) = watch::channel(false);
    serve_page(allowed, page(api, &calls), stopped.clone());
    serve_page(other, page(api, &calls), stopped);

    let url = format!("{page_origin}/");
    let seen = results(
        &tokio::task::spawn_blocking(move || dump_dom(&url))
            .await
            .unwrap(),
    );
    assert_eq!(seen.len(), 5, "{seen:?}");
    let ok = find(&seen, "ok");
    assert_eq!(ok["status"], 200, "{ok}");
    let body: Value = serde_json::from_str(ok["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["from"], "upstream");
    assert_eq!(
        ok["upstream"],
        Value::Null,
        "X-Upstream is not exposed by the global policy"
    );
    assert_eq!(find(&seen, "put")["status"], 200, "{seen:?}");
    // scopegate's refusals are readable, body and challenge.
    let forbidden = find(&seen, "forbidden");
    assert_eq!(forbidden["status"], 403, "{forbidden}");
    let problem: Value = serde_json::from_str(forbidden["body"].as_str().unwrap()).unwrap();
    assert_eq!(problem["code"], "insufficient_scope");
    assert_eq!(problem["required_scope"], "read:items");
    assert!(
        forbidden["challenge"]
            .as_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    let unauthorized = find(&seen, "unauthorized");
    assert_eq!(unauthorized["status"], 401, "{unauthorized}");
    let problem: Value = serde_json::from_str(unauthorized["body"].as_str().unwrap()).unwrap();
    assert_eq!(problem["code"], "invalid_token");
    assert!(
        unauthorized["challenge"]
            .as_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    // A route whose own policy does not list this page's origin: the browser refuses.
    assert_eq!(
        find(&seen, "other-policy")["error"],
        "TypeError",
        "{seen:?}"
    );
    // Only the two allowed calls reached the upstream: no preflight, no refusal.
    assert_eq!(
        rec.seen(),
        [
            (Method::GET, "/items".to_string()),
            (Method::PUT, "/items/7".to_string())
        ]
    );

    // The same page from an origin scopegate does not allow: every call fails in the browser.
    let url = format!("{other_origin}/");
    let seen = results(
        &tokio::task::spawn_blocking(move || dump_dom(&url))
            .await
            .unwrap(),
    );
    assert_eq!(seen.len(), 5, "{seen:?}");
    for s in &seen {
        assert_eq!(s["error"], "TypeError", "{s}");
    }
    assert_eq!(rec.seen().len(), 2, "the upstream saw {:?}", rec.seen());
    let m = metrics(h.gateway.admin_addr).await;
    for outcome in ["granted", "origin_not_allowed"] {
        assert!(
            m.contains(&format!(
                "scopegate_cors_preflights_total{{outcome=\"{outcome}\"}}"
            )),
            "{m}"
        );
    }
    let _ = stop.send(true);
}
