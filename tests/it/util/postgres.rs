//! A real PostgreSQL server per test: `initdb` into a temporary folder, `pg_ctl start` on a free
//! loopback port (run as the `postgres` user when the tests run as root: PostgreSQL refuses
//! root), stopped and removed on drop. `scripts/test` installs Debian's `postgresql`. The
//! comparison bench includes this file too (its cold org row on PostgreSQL), so it depends on
//! nothing else of the test crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::NoTls;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// Server options besides the port and socket folder (TLS).
    options: String,
}

/// The folder of `initdb` and `pg_ctl`: Debian keeps them under /usr/lib/postgresql/<v>/bin.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/test, which installs it")
    })
}

/// Whether the tests run as root (asked once).
fn root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    })
}

/// `program args`, as the `postgres` user when we are root; panics with its output on failure.
fn run(program: &Path, args: &[&str]) {
    let output = if root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    }
    .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Postgres {
    /// A new empty server (superuser `scopegate`, trust authentication on loopback).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// [`start`](Self::start), also accepting TLS with the PEM certificate and key of `leaf`
    /// (plaintext stays possible: the client decides).
    #[allow(
        dead_code,
        reason = "the bench includes this file and starts no TLS server"
    )]
    pub fn start_tls(leaf: (&str, &str)) -> Self {
        Self::start_with(Some(leaf))
    }

    fn start_with(leaf: Option<(&str, &str)>) -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "scopegate-pg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if root() {
            let status = Command::new("chown")
                .args(["postgres:", &dir.display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let data = dir.join("data");
        let data = data.to_str().unwrap();
        run(
            &bin.join("initdb"),
            &[
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "scopegate",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut options = String::new();
        if let Some((cert_pem, key_pem)) = leaf {
            // PostgreSQL wants its key readable by its own user only.
            let (cert, key) = (dir.join("server.pem"), dir.join("server-key.pem"));
            std::fs::write(&cert, cert_pem).unwrap();
            std::fs::write(&key, key_pem).unwrap();
            for file in [&cert, &key] {
                if root() {
                    let status = Command::new("chown")
                        .args(["postgres:", file.to_str().unwrap()])
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            );
        }
        let port = free_port();
        let pg = Self {
            dir,
            bin,
            port,
            options,
        };
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off{}",
            self.port,
            self.dir.display(),
            self.options
        );
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: open connections are closed).
    #[allow(
        dead_code,
        reason = "the bench includes this file and never stops a server"
    )]
    pub fn stop(&self) {
        let data = self.dir.join("data");
        run(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts it again after [`stop`](Self::stop), on the same port.
    #[allow(
        dead_code,
        reason = "the bench includes this file and never stops a server"
    )]
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// The connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://scopegate@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` (several statements allowed).
    pub async fn execute(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"];
        let _ = if root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&pg_ctl)
                .args(args)
                .output()
        } else {
            Command::new(&pg_ctl).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
