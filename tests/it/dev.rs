//! `scopegate dev`: starts with nothing to set up, and every curl command it prints answers the
//! status its comment promises.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn dev_mode_prints_commands_that_behave_as_they_say() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["dev", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let mut expected: Vec<u16> = Vec::new();
    let mut checked = 0;
    for line in &lines {
        if let Some(comment) = line.strip_prefix("# ") {
            expected = comment
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| w.len() == 3)
                .map(|w| w.parse().unwrap())
                .collect();
            expected.reverse();
        } else if line.starts_with("curl ") {
            let want = expected
                .pop()
                .expect("every curl line follows a comment with its status");
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{line} -o /dev/null -w '%{{http_code}}'"))
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout);
            assert_eq!(got.trim(), want.to_string(), "{line}");
            checked += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        checked >= 6,
        "only {checked} commands found in:\n{}",
        lines.join("\n")
    );
}
