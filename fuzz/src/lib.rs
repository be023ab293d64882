//! Shared set-up for the fuzz targets: one relay, built once, whose
//! sessions are driven over in-memory streams.

use std::sync::{Arc, OnceLock};

use mailveil::config::Config;
use mailveil::relay::Relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A relay whose upstreams are unreachable (nothing pre-login needs them).
pub fn relay() -> &'static (tokio::runtime::Runtime, Arc<Relay>) {
    static RELAY: OnceLock<(tokio::runtime::Runtime, Arc<Relay>)> = OnceLock::new();
    RELAY.get_or_init(|| {
        mailveil::tls::install_process_provider();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = Config::parse(
            r#"
[server]
hostname = "fuzz.test"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "starttls"
[[upstream]]
name = "up"
smtp = { host = "127.0.0.1", port = 1, tls = "implicit" }
imap = { host = "127.0.0.1", port = 1, tls = "implicit" }
[routing]
default = "up"
[egress]
mode = "direct"
[limits]
max_message_bytes = 100000
max_command_bytes = 2048
max_imap_line_bytes = 4096
auth_failure_delay_ms = 0
[logging]
stats_interval_minutes = 0
"#,
        )
        .expect("config");
        let identity = mailveil::tls::server_identity(None, None, "fuzz.test").expect("identity");
        let relay = {
            let _guard = runtime.enter();
            Arc::new(Relay::new(config, identity.config).expect("relay"))
        };
        (runtime, relay)
    })
}

/// Runs one plain-text session of `protocol` with `input` as everything
/// the client sends (then it closes its side); returns what the relay sent.
pub fn session(imap: bool, input: &[u8]) -> Vec<u8> {
    let (runtime, relay) = relay();
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let relay = relay.clone();
        let served = tokio::spawn(async move {
            if imap {
                mailveil::imap::serve(&relay, server, false).await
            } else {
                mailveil::smtp::serve(&relay, server, false).await
            }
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let mut out = Vec::new();
        let read = rd.read_to_end(&mut out);
        let _ = tokio::join!(write, read);
        let _ = served.await;
        out
    })
}

/// Every line ends in CRLF, and no line holds a bare CR or LF.
pub fn assert_crlf_lines(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"), "output does not end in CRLF");
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF in output at {i}");
        }
        if b == b'\r' {
            assert!(out.get(i + 1) == Some(&b'\n'), "bare CR in output at {i}");
        }
    }
}
