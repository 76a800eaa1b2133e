//! Real ingress proxies for the forward-auth tests: nginx (`auth_request`) and Caddy
//! (`forward_auth`), from Debian's packages, started on loopback with generated configs. Each
//! runs until its guard is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running proxy process, killed on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scopegate-{name}-{}-{}",
        std::process::id(),
        super::closed_port().port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn require(binary: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {binary}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{binary}` is not installed: run `scripts/test`, which installs it (apt-get install {binary})"
    );
}

async fn wait_until_listening(addr: SocketAddr, child: &mut Child, log: &std::path::Path) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the proxy exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the proxy did not listen on {addr}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The headers the README's nginx snippet sets on the auth subrequest: every one scopegate's
/// `nginx` convention reads, and the client's `X-Original-URL` cleared.
pub const NGINX_AUTH_HEADERS: &str = r#"proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Host $host;
      proxy_set_header X-Original-URL "";"#;

/// nginx in front of `upstream`, asking scopegate's `auth` listener with `auth_request` (the
/// README's snippet) and copying the minted `Authorization` upstream.
pub async fn nginx(auth: SocketAddr, upstream: SocketAddr) -> Proxy {
    nginx_with(auth, upstream, NGINX_AUTH_HEADERS).await
}

/// nginx as in [`nginx`], with `auth_headers` as the subrequest's `proxy_set_header` lines.
pub async fn nginx_with(auth: SocketAddr, upstream: SocketAddr, auth_headers: &str) -> Proxy {
    require("nginx");
    let dir = workdir("nginx");
    let addr = super::closed_port();
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen {addr};
    location / {{
      auth_request /_scopegate;
      auth_request_set $sg_authorization $upstream_http_authorization;
      auth_request_set $sg_subject $upstream_http_x_scopegate_subject;
      proxy_set_header Authorization $sg_authorization;
      proxy_set_header X-Scopegate-Subject $sg_subject;
      proxy_pass http://{upstream};
    }}
    location = /_scopegate {{
      internal;
      proxy_pass http://{auth}/;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      {auth_headers}
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log = dir.join("error.log");
    let mut child = Command::new("nginx")
        .args([
            "-p",
            &d.to_string(),
            "-c",
            &format!("{d}/nginx.conf"),
            "-e",
            &log.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_listening(addr, &mut child, &log).await;
    Proxy { addr, child, dir }
}

/// Caddy in front of `upstream`, with `forward_auth` to scopegate (Traefik's header convention)
/// and `copy_headers Authorization`.
pub async fn caddy(auth: SocketAddr, upstream: SocketAddr) -> Proxy {
    require("caddy");
    let dir = workdir("caddy");
    let addr = super::closed_port();
    let caddyfile = format!(
        r#"{{
	admin off
	auto_https off
}}

http://{addr} {{
	forward_auth {auth} {{
		uri /
		copy_headers Authorization X-Scopegate-Subject
	}}
	reverse_proxy {upstream}
}}
"#
    );
    std::fs::write(dir.join("Caddyfile"), caddyfile).unwrap();
    let log = dir.join("caddy.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("caddy")
        .args([
            "run",
            "--config",
            &dir.join("Caddyfile").display().to_string(),
            "--adapter",
            "caddyfile",
        ])
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    wait_until_listening(addr, &mut child, &log).await;
    Proxy { addr, child, dir }
}
