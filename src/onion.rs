//! The relay's onion service key, in the form C tor keeps it in a
//! `HiddenServiceDir`: `hs_ed25519_secret_key` (a 32-byte header, then the
//! 64-byte expanded secret key), `hs_ed25519_public_key` and `hostname`.
//!
//! The running relay only reads it (arti's read-only C tor keystore does,
//! and [`address_of`] checks it first, so that a missing or unreadable key
//! stops the start instead of letting arti make a new one and publish a
//! different address). `mailveil onion-key` makes one ([`generate`]), as
//! an operator's step before the relay runs.

use std::path::Path;

use zeroize::Zeroize;

/// The secret key file in a key directory.
pub const SECRET_FILE: &str = "hs_ed25519_secret_key";
/// The public key file.
pub const PUBLIC_FILE: &str = "hs_ed25519_public_key";
/// The file with the address, as C tor writes it.
pub const HOSTNAME_FILE: &str = "hostname";

/// The header C tor writes before the secret key (NUL-padded to 32 bytes).
const SECRET_HEADER: &[u8] = b"== ed25519v1-secret: type0 ==";
/// The header before the public key.
const PUBLIC_HEADER: &[u8] = b"== ed25519v1-public: type0 ==";

/// A key directory that cannot be used. Messages name files, never keys.
#[derive(Debug, thiserror::Error)]
pub enum OnionKeyError {
    /// The secret key file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not a C tor v3 onion service secret key.
    #[error(
        "{0}: not an onion service secret key (expected 96 bytes starting \"== ed25519v1-secret: type0 ==\")"
    )]
    NotAKey(String),
    /// `onion-key` would overwrite a key.
    #[error("{0} already exists: not overwriting an onion service key")]
    Exists(String),
    /// Writing the new key failed.
    #[error("{path}: {reason}")]
    Write {
        /// The file or directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The onion address (`<56 characters>.onion`) of the key in `dir`.
pub fn address_of(dir: &Path) -> Result<String, OnionKeyError> {
    let path = dir.join(SECRET_FILE);
    let shown = path.display().to_string();
    let mut bytes = std::fs::read(&path).map_err(|e| OnionKeyError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let address = parse_secret(&bytes).ok_or(OnionKeyError::NotAKey(shown));
    bytes.zeroize();
    address
}

/// The address of a secret key file's contents, if it is one.
fn parse_secret(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 96 || !header_ok(&bytes[..32], SECRET_HEADER) {
        return None;
    }
    let mut secret = [0u8; 64];
    secret.copy_from_slice(&bytes[32..]);
    let keypair = tor_llcrypto::pk::ed25519::ExpandedKeypair::from_secret_key_bytes(secret);
    secret.zeroize();
    keypair.map(|k| address_of_public(k.public()))
}

fn header_ok(field: &[u8], header: &[u8]) -> bool {
    field[..header.len()] == *header && field[header.len()..].iter().all(|&b| b == 0)
}

/// `<base32>.onion` of an ed25519 identity key (rend-spec v3).
fn address_of_public(public: &tor_llcrypto::pk::ed25519::PublicKey) -> String {
    onion_name(tor_hscrypto::pk::HsId::from(
        tor_hscrypto::pk::HsIdKey::from(*public),
    ))
}

/// An onion service identity as its address, `<56 characters>.onion`.
pub(crate) fn onion_name(id: tor_hscrypto::pk::HsId) -> String {
    use safelog::DisplayRedacted as _;
    id.display_unredacted().to_string()
}

/// Makes a new key in `dir` (created 0700 if missing): the three files C
/// tor would, the secret one 0600. Refuses to overwrite a key. Returns the
/// address.
pub fn generate(dir: &Path) -> Result<String, OnionKeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let secret_path = dir.join(SECRET_FILE);
    if secret_path.exists() {
        return Err(OnionKeyError::Exists(secret_path.display().to_string()));
    }
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| OnionKeyError::Write {
            path,
            reason: e.to_string(),
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed(dir))?;
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| failed(dir)(std::io::Error::other("no randomness")))?;
    let keypair = tor_llcrypto::pk::ed25519::Keypair::from_bytes(&seed);
    seed.zeroize();
    let expanded = tor_llcrypto::pk::ed25519::ExpandedKeypair::from(&keypair);
    let mut secret = [0u8; 96];
    secret[..SECRET_HEADER.len()].copy_from_slice(SECRET_HEADER);
    let mut key = expanded.to_secret_key_bytes();
    secret[32..].copy_from_slice(&key);
    key.zeroize();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .and_then(|mut f| f.write_all(&secret).and_then(|()| f.sync_all()));
    secret.zeroize();
    written.map_err(failed(&secret_path))?;
    let mut public = [0u8; 64];
    public[..PUBLIC_HEADER.len()].copy_from_slice(PUBLIC_HEADER);
    public[32..].copy_from_slice(expanded.public().as_bytes());
    let public_path = dir.join(PUBLIC_FILE);
    std::fs::write(&public_path, public).map_err(failed(&public_path))?;
    let address = address_of_public(expanded.public());
    let hostname_path = dir.join(HOSTNAME_FILE);
    std::fs::write(&hostname_path, format!("{address}\n")).map_err(failed(&hostname_path))?;
    Ok(address)
}

/// Most rendezvous requests being answered at once (each builds a circuit
/// to the client's rendezvous point); more are dropped, as an overloaded
/// C tor service drops them.
const MAX_RENDEZVOUS_IN_FLIGHT: usize = 64;

/// Runs the relay's onion service: launches it once Tor is ready, checks
/// it publishes the address of the configured key, then serves its ports
/// (`listeners`) until the relay stops. A client's rendezvous circuit
/// stands where a network would for admission: its failed logins are
/// charged to it (and to the login), never to all onion clients; the
/// number and rate of onion connections are counted for all of them
/// together (`onion_*` limits).
///
/// Logs the service's own states (never a client); a stream that asks for
/// a port the relay does not serve is refused with END DONE, as C tor
/// does. An error when the service cannot be run as configured: the relay
/// then stops rather than run without it.
pub(crate) async fn serve(
    relay: std::sync::Arc<crate::relay::Relay>,
    listeners: Vec<crate::server::Indexed>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<(), String> {
    use futures::StreamExt as _;
    let (Some(tor), Some(expected)) = (relay.egress.tor(), relay.onion_address()) else {
        return Err("onion service configured but no Tor client or key".into());
    };
    let started = tokio::time::Instant::now();
    let (service, mut requests) = match tor.launch_onion_service(&relay.config.limits).await {
        Ok(launched) => launched,
        Err(e) => return Err(format!("onion service: could not launch: {e}")),
    };
    // arti makes a new identity key when it cannot read the configured
    // one; never publish that.
    let published = crate::egress::tor::service_address(&service);
    if published.as_deref() != Some(expected) {
        return Err(
            "onion service: arti did not use the key in the key directory (it would publish another address)"
                .into(),
        );
    }
    tracing::info!("onion service {expected}: launched, publishing its descriptor");
    tokio::spawn(report_states(service.clone(), started));
    let rendezvous = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_RENDEZVOUS_IN_FLIGHT));
    let listeners = std::sync::Arc::new(listeners);
    while let Some(request) = requests.next().await {
        let Ok(turn) = rendezvous.clone().try_acquire_owned() else {
            relay.stats.count(crate::stats::Counter::OnionRefused);
            drop(request);
            continue;
        };
        let (relay, listeners, permits) = (relay.clone(), listeners.clone(), permits.clone());
        tokio::spawn(async move {
            let streams = request.accept().await;
            drop(turn);
            let Ok(mut streams) = streams else {
                return;
            };
            // Held by this task for as long as the circuit lasts.
            let circuit = crate::admission::Tag::random();
            while let Some(stream) = streams.next().await {
                serve_stream(&relay, &listeners, &permits, circuit, stream).await;
            }
        });
    }
    drop(service);
    Ok(())
}

/// Accepts or refuses one stream of a client circuit.
async fn serve_stream(
    relay: &std::sync::Arc<crate::relay::Relay>,
    listeners: &[crate::server::Indexed],
    permits: &std::sync::Arc<tokio::sync::Semaphore>,
    circuit: crate::admission::Tag,
    stream: tor_hsservice::StreamRequest,
) {
    use crate::config::ListenAddress;
    use tor_cell::relaycell::msg::{Connected, End, EndReason};
    use tor_proto::stream::IncomingStreamRequest;
    let port = match stream.request() {
        IncomingStreamRequest::Begin(begin) => Some(begin.port()),
        _ => None,
    };
    let listener = port.and_then(|port| {
        listeners
            .iter()
            .find(|l| l.1.address == ListenAddress::Onion(port))
    });
    let refuse = |stream: tor_hsservice::StreamRequest| async move {
        let _ = stream.reject(End::new_with_reason(EndReason::DONE)).await;
    };
    let Some(listener) = listener else {
        refuse(stream).await;
        return;
    };
    let peer = match relay.admission.admit_onion(circuit) {
        Ok(peer) => peer,
        Err(_) => {
            relay.stats.count(crate::stats::Counter::OnionRefused);
            refuse(stream).await;
            return;
        }
    };
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        relay.stats.count(crate::stats::Counter::RefusedBusy);
        refuse(stream).await;
        return;
    };
    let Ok(data) = stream.accept(Connected::new_empty()).await else {
        return;
    };
    tokio::spawn(crate::server::serve(
        relay.clone(),
        listener.clone(),
        data,
        peer,
        permit,
    ));
}

/// Logs the service's state as it changes (reachable or not, and why in
/// arti's words about itself), with the time since launch: the first
/// "running" is when clients can reach it.
async fn report_states(
    service: std::sync::Arc<tor_hsservice::RunningOnionService>,
    started: tokio::time::Instant,
) {
    use futures::StreamExt as _;
    let mut events = service.status_events();
    let mut last = String::new();
    while let Some(status) = events.next().await {
        use tor_hsservice::status::Problem;
        let problem = match status.current_problem() {
            Some(Problem::DescriptorUpload(_)) => " (descriptor upload failing)",
            Some(Problem::Ipt(_)) => " (introduction points failing)",
            Some(Problem::Runtime(_)) => " (fatal error)",
            Some(_) => " (a problem)",
            None => "",
        };
        let state = format!("{:?}{problem}", status.state());
        if state != last {
            tracing::info!(
                "onion service: {state} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_to_its_address_and_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("onion");
        let address = generate(&keys).expect("generate");
        assert_eq!(address.len(), 56 + ".onion".len());
        assert!(address.ends_with(".onion"));
        assert_eq!(address_of(&keys).expect("read"), address);
        let hostname = std::fs::read_to_string(keys.join(HOSTNAME_FILE)).expect("hostname");
        assert_eq!(hostname, format!("{address}\n"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(SECRET_FILE)), 0o600);
        assert!(matches!(generate(&keys), Err(OnionKeyError::Exists(_))));
        assert_ne!(
            generate(&dir.path().join("other")).expect("second"),
            address
        );
    }

    /// A key as C tor writes it: the rend-spec v3 test vector's public key
    /// gives its documented address.
    #[test]
    fn the_address_follows_rend_spec() {
        // rend-spec-v3 appendix "Test vectors for onion addresses":
        // pubkey d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
        let mut public = [0u8; 32];
        for (i, b) in public.iter_mut().enumerate() {
            let hex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        let key = tor_llcrypto::pk::ed25519::PublicKey::from_bytes(&public).expect("key");
        assert_eq!(
            address_of_public(&key),
            "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion"
        );
    }

    #[test]
    fn files_that_are_not_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = address_of(dir.path()).expect_err("missing");
        assert!(missing.to_string().contains(SECRET_FILE), "{missing}");
        std::fs::write(dir.path().join(SECRET_FILE), [0u8; 96]).expect("write");
        assert!(matches!(
            address_of(dir.path()),
            Err(OnionKeyError::NotAKey(_))
        ));
        let mut short = SECRET_HEADER.to_vec();
        short.resize(64, 0);
        std::fs::write(dir.path().join(SECRET_FILE), short).expect("write");
        assert!(matches!(
            address_of(dir.path()),
            Err(OnionKeyError::NotAKey(_))
        ));
    }
}
