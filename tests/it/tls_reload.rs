//! Certificate reload (SIGHUP in `main`): new handshakes get the new
//! certificate, and files that cannot be used leave the current one in place.

use std::sync::Arc;

use crate::common::*;
use mailveil::config::Config;
use mailveil::relay::Relay;
use mailveil::server::Server;
use rustls_pki_types::{CertificateDer, ServerName};

fn make_cert() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

/// Whether a TLS handshake with the relay succeeds when trusting only `leaf`.
async fn handshake_trusting(addr: std::net::SocketAddr, leaf: &CertificateDer<'static>) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client_tls(leaf)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_the_old_one_on_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert_a, key_a, leaf_a) = make_cert();
    std::fs::write(&cert_path, &cert_a).expect("write");
    std::fs::write(&key_path, &key_a).expect("write");

    let upstream = start_upstream(UpstreamScript::default()).await;
    let config = Config::parse(&relay_config(&upstream, "implicit", true, "")).expect("config");
    let identity =
        mailveil::tls::server_identity(Some(&cert_path), Some(&key_path), "localhost").expect("id");
    let certificate = identity.certificate.clone();
    let relay = Arc::new(Relay::new(config, identity.config).expect("relay"));
    let server = Server::bind(relay).await.expect("bind");
    let addr = server.local_addrs()[0];
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    assert!(handshake_trusting(addr, &leaf_a).await);

    // New files: new handshakes get certificate B.
    let (cert_b, key_b, leaf_b) = make_cert();
    std::fs::write(&cert_path, &cert_b).expect("write");
    std::fs::write(&key_path, &key_b).expect("write");
    certificate.reload(&cert_path, &key_path).expect("reload B");
    assert!(handshake_trusting(addr, &leaf_b).await);
    assert!(!handshake_trusting(addr, &leaf_a).await);

    // A key that does not match, then garbage: refused, B stays.
    std::fs::write(&key_path, &key_a).expect("write");
    let err = certificate
        .reload(&cert_path, &key_path)
        .expect_err("mismatch");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    std::fs::write(&cert_path, "not a certificate").expect("write");
    assert!(certificate.reload(&cert_path, &key_path).is_err());
    assert!(handshake_trusting(addr, &leaf_b).await);
}
