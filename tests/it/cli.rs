//! The `mailveil` command as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mailveil");

/// The example configuration, adapted to a build without the embedded Tor
/// client (which refuses the example's `mode = "tor"`).
fn example_config() -> String {
    let text = std::fs::read_to_string("config/mailveil.example.toml").expect("example");
    if cfg!(feature = "tor") {
        text
    } else {
        text.replace("mode = \"tor\"", "mode = \"direct\"")
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("mailveil {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_config_and_prints_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("example.toml");
    std::fs::write(&path, example_config()).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen: Smtp on 127.0.0.1:1465"), "{text}");
    assert!(
        text.contains("certificate: ephemeral self-signed"),
        "{text}"
    );
    assert!(text.ends_with("configuration OK\n"), "{text}");
}

#[test]
fn check_names_the_bad_key_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    let text = example_config().replace("max_recipients = 100", "max_recipients = 0");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`limits.max_recipients`: must be between 1 and 10000"),
        "{err}"
    );
}

#[test]
fn run_without_a_certificate_prints_the_ephemeral_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n\
         [[upstream]]\nname = \"p\"\nsmtp = { host = \"127.0.0.1\", port = 1, tls = \"implicit\" }\n\
         domains = [\"*\"]\n[egress]\nmode = \"direct\"\n",
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let _ = child.kill();
    let _ = child.wait();
    let fingerprint = line
        .trim()
        .strip_prefix("ephemeral certificate SHA-256 fingerprint: ")
        .expect("fingerprint line");
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    assert!(
        fingerprint
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[test]
fn access_add_reads_the_login_from_stdin_and_prints_the_line_check_accepts() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("access-key");
    std::fs::write(&secret, b"0123456789abcdef0123456789abcdef").expect("write");
    let mut child = Command::new(BIN)
        .args(["access", "add", "--secret"])
        .arg(&secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Alice@Example.org\n")
        .expect("write login");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let key =
        mailveil::access::AccessKey::from_secret(b"0123456789abcdef0123456789abcdef").expect("key");
    assert_eq!(line, format!("{}\n", key.member_line("alice@example.org")));

    // The login is never an argument (shell history keeps those).
    let out = Command::new(BIN)
        .args(["access", "add", "alice@example.org"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));

    // `check` reads the list with the secret and counts its members.
    let list = dir.path().join("members");
    std::fs::write(&list, &line).expect("write list");
    let config = example_config().replace(
        "[limits]",
        &format!(
            "[access]\nlist = \"{}\"\nsecret_file = \"{}\"\n\n[limits]",
            list.display(),
            secret.display()
        ),
    );
    let path = dir.path().join("mailveil.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("members list: 1 member, all made with this secret"),
        "{stdout}"
    );
}
