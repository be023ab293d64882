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
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("access-key");
    std::fs::write(&secret, b"0123456789abcdef0123456789abcdef").expect("write");
    let (ok, line, err) = run_with_stdin(
        &["access", "add", "--secret", secret.to_str().expect("utf-8")],
        "Alice@Example.org\n",
    );
    assert!(ok, "{err}");
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
    let stdout = check_with_access(&path, &config);
    assert!(
        stdout.contains("members list: 1 member, all made with this secret"),
        "{stdout}"
    );

    // With the secret a systemd credential, check cannot verify the lines;
    // it says so, and warns of a list the service's dynamic user could
    // not read.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = example_config().replace(
        "[limits]",
        &format!("[access]\nlist = \"{}\"\n\n[limits]", list.display()),
    );
    let stdout = check_with_access(&path, &config);
    assert!(
        stdout.contains(
            "members list: read at start with the secret systemd delivers as credential \
             mailveil-access-key (README, \"Members only\"); not checked here"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("is not readable by others (mode 600)"),
        "{stdout}"
    );
}

/// `mailveil check` on `config` written to `path`: its output, which must
/// say the configuration is OK.
fn check_with_access(path: &std::path::Path, config: &str) -> String {
    std::fs::write(path, config).expect("write config");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("configuration OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `mailveil ARGS` with `stdin`; (success, stdout, stderr).
fn run_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A relay given by flags alone: host `h`, implicit TLS on both ports.
const BY_FLAGS: &[&str] = &["--host", "h", "--imap-port", "993", "--smtp-port", "465"];

/// `mailveil client-config ARGS` with `stdin`.
fn client_config(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut all = vec!["client-config"];
    all.extend_from_slice(args);
    run_with_stdin(&all, stdin)
}

#[test]
fn client_config_mobileconfig_loads_in_plistlib_with_apples_mail_and_root_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rcgen::generate_simple_self_signed(vec!["Relay CA".into()]).expect("ca");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).expect("write ca");
    let config = dir.path().join("mailveil.toml");
    std::fs::write(&config, example_config()).expect("write config");
    let (ok, profile, err) = client_config(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--format",
            "mobileconfig",
            "--host",
            "relay.example.org",
            "--ca",
            ca_path.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(ok, "{err}");
    let path = dir.path().join("relay.mobileconfig");
    std::fs::write(&path, &profile).expect("write profile");
    // Python's plistlib reads the profile; the payloads carry the types and
    // keys Apple documents (Mail: com.apple.mail.managed; Certificate Root:
    // com.apple.security.root) and the root is the CA, byte for byte.
    let script = r#"
import plistlib, ssl, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["PayloadType"] == "Configuration" and p["PayloadVersion"] == 1, p
mail, root = p["PayloadContent"]
assert mail["PayloadType"] == "com.apple.mail.managed", mail
assert mail["EmailAccountType"] == "EmailTypeIMAP"
assert mail["IncomingMailServerHostName"] == mail["OutgoingMailServerHostName"] == "relay.example.org"
assert mail["IncomingMailServerPortNumber"] == 1993 and mail["OutgoingMailServerPortNumber"] == 1465, mail
assert mail["IncomingMailServerUseSSL"] is True and mail["OutgoingMailServerUseSSL"] is True
assert mail["IncomingMailServerAuthentication"] == mail["OutgoingMailServerAuthentication"] == "EmailAuthPassword"
assert mail["OutgoingPasswordSameAsIncomingPassword"] is True
for absent in ("EmailAddress", "IncomingMailServerUsername", "IncomingPassword", "OutgoingPassword"):
    assert absent not in mail, absent
assert root["PayloadType"] == "com.apple.security.root", root
assert root["PayloadContent"] == ssl.PEM_cert_to_DER_cert(open(sys.argv[2]).read())
uuids = [p["PayloadUUID"], mail["PayloadUUID"], root["PayloadUUID"]]
assert len(set(uuids)) == 3, uuids
ids = [p["PayloadIdentifier"], mail["PayloadIdentifier"], root["PayloadIdentifier"]]
assert len(set(ids)) == 3, ids
print("plistlib ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(&ca_path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn client_config_dclogin_asks_for_the_password_and_text_holds_none() {
    let (ok, out, err) = client_config(
        &[
            "--format",
            "dclogin",
            "--host",
            "relay.example.org",
            "--imap-port",
            "993",
            "--smtp-port",
            "465",
        ],
        "alice@example.org\nsecret pw&1\n",
    );
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(
            "dclogin:alice@example.org?p=secret%20pw%261&v=1&ih=relay.example.org&ip=993&is=ssl\
             &sh=relay.example.org&sp=465&ss=ssl&ic=1"
        )
    );
    // The QR code follows, black on white half blocks.
    assert!(lines.next().is_some_and(|l| l.starts_with("\x1b[30;47m")));
    assert!(err.contains("It holds your password"), "{err}");

    // Without a password there is no login code.
    let (ok, _, err) = client_config(
        &[&["--format", "dclogin"], BY_FLAGS].concat(),
        "alice@example.org\n\n",
    );
    assert!(!ok);
    assert!(err.contains("expected a password"), "{err}");

    // A chain is not a CA: its first certificate is the relay's own.
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("fullchain.pem");
    let pem = |name: &str| {
        rcgen::generate_simple_self_signed(vec![name.into()])
            .expect("cert")
            .cert
            .pem()
    };
    std::fs::write(&chain, pem("relay.example.org") + &pem("CA")).expect("write");
    let (ok, _, err) = client_config(
        &[
            &["--format", "text", "--ca", chain.to_str().expect("utf-8")],
            BY_FLAGS,
        ]
        .concat(),
        "",
    );
    assert!(!ok);
    assert!(err.contains("holds 2 certificates"), "{err}");

    let (ok, text, err) = client_config(
        &[
            "--format",
            "text",
            "--host",
            "relay.example.org",
            "--imap-port",
            "143",
            "--smtp-port",
            "587",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(text.contains("| Port | 143 | 587 |"), "{text}");
    assert!(
        text.contains("| Connection security | STARTTLS | STARTTLS |"),
        "{text}"
    );
}

#[test]
fn the_password_prompt_hides_the_password_and_ctrl_c_restores_echo() {
    // A real terminal (a pty, driven by Python): echo off while the
    // password is typed, back on after, also when Ctrl-C ends the program.
    let out = Command::new("python3")
        .arg("tests/fixtures/prompt_pty.py")
        .arg(BIN)
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pty ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly_and_never_with_success() {
    // `mailveil ... | grep -q`: the reader is gone before the command
    // writes. It used to panic ("failed printing to stdout"); now it ends
    // as SIGPIPE would end a C program, and a cut-short `check` can never
    // report success.
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; { sleep 0.3; exec \"$0\" client-config --format text \
             --host h --imap-port 993 --smtp-port 465; } | true; echo \"status $?\"",
            BIN,
        ])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "status 141", "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}
