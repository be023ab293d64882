//! The embedded Tor client (arti).
//!
//! Created at start-up without bootstrapping; a background task bootstraps it
//! (retrying) and another logs progress: percentages and blockage kinds only,
//! nothing about users. Until it is ready every connection attempt gets
//! [`EgressError::TorNotReady`], which sessions turn into a temporary error;
//! there is no other way out in this mode.
//!
//! Arti keeps state and a directory cache on disk. They go into a fresh 0700
//! directory under the runtime directory (a tmpfs under systemd's
//! `RuntimeDirectory=`), removed when the relay stops.
//!
//! Isolation: every [`IsolationKey`] is its own isolation group, so two
//! accounts (or, with `isolate = "session"`, two sessions) never share a
//! circuit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arti_client::config::dir::{AuthorityContacts, FallbackDir};
use arti_client::config::{BoolOrAuto, CfgPath};
use arti_client::isolation::IsolationHelper;
use arti_client::{StreamPrefs, TorClient, TorClientConfig};
use futures::StreamExt;
use tor_llcrypto::pk::ed25519::Ed25519Identity;
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_rtcompat::PreferredRuntime;

use super::{BoxedStream, EgressError, EgressSetupError, IsolationKey};
use crate::config::{EgressConfig, Limits, OnionConfig, TestingNetwork, Vanguards};

/// The onion service's nickname in arti (its keys and state are filed
/// under it).
const ONION_NICKNAME: &str = "mailveil";

/// How long to wait between bootstrap attempts that failed outright.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(15);

/// The running embedded Tor client.
pub(crate) struct TorEgress {
    client: Arc<TorClient<PreferredRuntime>>,
    ready: Arc<AtomicBool>,
    dir: RuntimeDir,
}

impl TorEgress {
    /// Creates the client and starts bootstrapping in the background.
    /// With `onion`, the client also reads the onion service's key from its
    /// directory (read-only) and uses the service's vanguards.
    pub(crate) fn start(
        config: &EgressConfig,
        onion: Option<&OnionConfig>,
    ) -> Result<Self, EgressSetupError> {
        crate::tls::install_process_provider();
        let dir = RuntimeDir::create(config.tor_runtime_dir.as_deref())
            .map_err(|e| EgressSetupError::Tor(format!("runtime directory: {e}")))?;
        let tor_config = build_config(dir.path(), config.tor_testing_network.as_ref(), onion)?;
        let client = TorClient::builder()
            .config(tor_config)
            .bootstrap_behavior(arti_client::BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .map_err(|e| EgressSetupError::Tor(e.to_string()))?;
        let ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(report_progress(client.clone()));
        tokio::spawn(bootstrap(client.clone(), ready.clone()));
        tracing::info!("Tor: bootstrapping in the background");
        Ok(TorEgress { client, ready, dir })
    }

    /// True once bootstrapping has finished and Tor can carry traffic.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.client.bootstrap_status().ready_for_traffic()
    }

    /// Waits until Tor is ready, or until `timeout`. True when ready.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.is_ready()
    }

    /// The private directory arti uses.
    pub(crate) fn runtime_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens a stream through Tor. `host` goes to the exit (or the onion
    /// service) as given; nothing is resolved here.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        isolation: &IsolationKey,
        timeout: Duration,
    ) -> Result<BoxedStream, EgressError> {
        if !self.is_ready() {
            return Err(EgressError::TorNotReady);
        }
        let mut prefs = StreamPrefs::new();
        prefs.set_isolation(TorIsolation(*isolation.as_bytes()));
        prefs.connect_to_onion_services(BoolOrAuto::Explicit(true));
        let stream = tokio::time::timeout(
            timeout,
            self.client.connect_with_prefs((host, port), &prefs),
        )
        .await
        .map_err(|_| EgressError::Timeout)?
        .map_err(|e| tor_error(&e))?;
        Ok(Box::new(stream))
    }
}

/// The onion service: its handle and the stream of rendezvous requests.
pub(crate) type OnionService = (
    Arc<tor_hsservice::RunningOnionService>,
    std::pin::Pin<Box<dyn futures::Stream<Item = tor_hsservice::RendRequest> + Send>>,
);

impl TorEgress {
    /// Launches the onion service once Tor is ready (waits for it). Its
    /// limits: `onion_connections_per_circuit` streams at once per client
    /// circuit (one more tears the circuit down), and the introduction
    /// rate the introduction points are asked to enforce.
    pub(crate) async fn launch_onion_service(
        &self,
        limits: &Limits,
    ) -> Result<OnionService, String> {
        while !self.wait_ready(Duration::from_secs(60)).await {}
        let mut b = tor_hsservice::config::OnionServiceConfigBuilder::default();
        b.nickname(
            tor_hsservice::HsNickname::new(ONION_NICKNAME.into())
                .map_err(|_| "bad nickname".to_string())?,
        )
        .max_concurrent_streams_per_circuit(limits.onion_connections_per_circuit)
        .rate_limit_at_intro(Some(tor_hsservice::config::TokenBucketConfig::new(
            limits.onion_introductions_per_second,
            limits.onion_introduction_burst,
        )));
        let config = b.build().map_err(|e| e.to_string())?;
        match self.client.launch_onion_service(config) {
            Ok(Some((service, requests))) => Ok((service, Box::pin(requests))),
            Ok(None) => Err("disabled".into()),
            Err(e) => {
                use arti_client::HasKind;
                Err(format!("{} ({e})", e.kind()))
            }
        }
    }
}

/// The address an onion service publishes, as `<56 characters>.onion`.
pub(crate) fn service_address(service: &tor_hsservice::RunningOnionService) -> Option<String> {
    service.onion_address().map(crate::onion::onion_name)
}

/// An isolation group: connections with equal keys may share a circuit,
/// others may not.
#[derive(Clone, PartialEq, Eq)]
struct TorIsolation([u8; 16]);

impl std::fmt::Debug for TorIsolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TorIsolation([scrubbed])")
    }
}

impl IsolationHelper for TorIsolation {
    fn compatible_same_type(&self, other: &Self) -> bool {
        self == other
    }

    fn join_same_type(&self, other: &Self) -> Option<Self> {
        (self == other).then(|| self.clone())
    }

    fn enables_long_lived_circuits(&self) -> bool {
        // Sessions (IMAP IDLE) can last for hours; a circuit only one account
        // uses may too.
        true
    }
}

/// A Tor connection failure, with a fixed description (arti's messages can
/// name the target): the provider's endpoint unreachable (another endpoint,
/// another port, may do better), or Tor itself.
fn tor_error(e: &arti_client::Error) -> EgressError {
    use arti_client::HasKind;
    tor_kind_error(e.kind())
}

fn tor_kind_error(kind: arti_client::ErrorKind) -> EgressError {
    use arti_client::ErrorKind as K;
    let unreachable = EgressError::TargetUnreachable;
    match kind {
        K::RemoteNetworkFailed => unreachable("the exit could not reach the provider"),
        K::RelayTooBusy => unreachable("the exit was too busy"),
        K::TorNetworkTimeout | K::RemoteNetworkTimeout | K::ExitTimeout => unreachable("timed out"),
        K::RemoteConnectionRefused => unreachable("the provider refused the connection"),
        K::RemoteHostNotFound | K::RemoteHostResolutionFailed => {
            unreachable("the exit could not resolve the provider's name")
        }
        K::ExitPolicyRejected | K::NoExit => unreachable("no exit allows this connection"),
        K::OnionServiceNotFound | K::OnionServiceNotRunning | K::OnionServiceConnectionFailed => {
            unreachable("onion service not reachable")
        }
        K::ForbiddenStreamTarget | K::InvalidStreamTarget => {
            EgressError::Tor("target refused by configuration")
        }
        K::BootstrapRequired => EgressError::Tor("not bootstrapped"),
        _ => EgressError::Tor("stream failed"),
    }
}

async fn bootstrap(client: Arc<TorClient<PreferredRuntime>>, ready: Arc<AtomicBool>) {
    loop {
        match client.bootstrap().await {
            Ok(()) => {
                ready.store(true, Ordering::Release);
                tracing::info!("Tor: bootstrapped, ready");
                return;
            }
            Err(e) => {
                use arti_client::HasKind;
                tracing::warn!(
                    "Tor: bootstrap failed ({}); retrying in {} s",
                    e.kind(),
                    BOOTSTRAP_RETRY.as_secs()
                );
                tokio::time::sleep(BOOTSTRAP_RETRY).await;
            }
        }
    }
}

/// Logs bootstrap progress in steps of 10 %, and each new kind of blockage.
async fn report_progress(client: Arc<TorClient<PreferredRuntime>>) {
    let mut events = client.bootstrap_events();
    let mut last_step = -1i32;
    let mut last_blockage = String::new();
    while let Some(status) = events.next().await {
        let percent = (status.as_frac() * 100.0) as i32;
        if percent / 10 != last_step {
            last_step = percent / 10;
            tracing::info!("Tor: bootstrap {percent}%");
        }
        // "Disabled" only means bootstrap() has not been called yet.
        let blockage = status
            .blocked()
            .filter(|b| !matches!(b.kind(), arti_client::status::BlockageKind::Disabled))
            .map(|b| b.kind().to_string())
            .unwrap_or_default();
        if blockage != last_blockage {
            if !blockage.is_empty() {
                tracing::warn!("Tor: bootstrap blocked: {blockage}");
            }
            last_blockage = blockage;
        }
        if status.ready_for_traffic() && percent >= 100 {
            return;
        }
    }
}

fn build_config(
    dir: &Path,
    testing: Option<&TestingNetwork>,
    onion: Option<&OnionConfig>,
) -> Result<TorClientConfig, EgressSetupError> {
    let mut b = TorClientConfig::builder();
    b.storage()
        .state_dir(CfgPath::new_literal(dir.join("state")))
        .cache_dir(CfgPath::new_literal(dir.join("cache")));
    if let Some(onion) = onion {
        // The identity key from the operator's directory, read-only; the
        // keys arti derives from it (descriptor signing, introduction
        // points) go to its primary keystore, under the runtime directory.
        let bad = |what: &str| EgressSetupError::Tor(format!("onion service {what}"));
        let mut store = tor_keymgr::config::CTorServiceKeystoreConfigBuilder::default();
        store
            .id("mailveil-onion-key"
                .parse()
                .map_err(|_| bad("keystore id"))?)
            .path(onion.key_directory.clone())
            .nickname(
                tor_hsservice::HsNickname::new(ONION_NICKNAME.into())
                    .map_err(|_| bad("nickname"))?,
            );
        b.storage().keystore().ctor_service(store);
        b.vanguards().mode(tor_config::ExplicitOrAuto::Explicit(
            match onion.vanguards {
                Vanguards::Full => tor_guardmgr::VanguardMode::Full,
                Vanguards::Lite => tor_guardmgr::VanguardMode::Lite,
            },
        ));
    }
    if let Some(net) = testing {
        let mut auths = AuthorityContacts::builder();
        for a in &net.authorities {
            let id = RsaIdentity::from_hex(&a.v3ident)
                .ok_or_else(|| EgressSetupError::Tor("bad authority v3ident".into()))?;
            auths.v3idents().push(id);
            auths.uploads().push(vec![a.address]);
            auths.downloads().push(vec![a.address]);
            auths.votes().push(vec![a.address]);
        }
        let mut fallbacks = Vec::new();
        for f in &net.fallbacks {
            let mut fb = FallbackDir::builder();
            fb.rsa_identity(
                RsaIdentity::from_hex(&f.rsa_identity)
                    .ok_or_else(|| EgressSetupError::Tor("bad fallback RSA identity".into()))?,
            )
            .ed_identity(
                Ed25519Identity::from_base64(&f.ed25519_identity)
                    .ok_or_else(|| EgressSetupError::Tor("bad fallback Ed25519 identity".into()))?,
            );
            fb.orports().push(f.address);
            fallbacks.push(fb);
        }
        *b.tor_network().authorities() = auths;
        b.tor_network().set_fallback_caches(fallbacks);
        // Every relay of a loopback network shares one address: let them share
        // a circuit, and let exits connect to local addresses.
        b.path_rules()
            .ipv4_subnet_family_prefix(33)
            .ipv6_subnet_family_prefix(129);
        b.address_filter().allow_local_addrs(true);
        tracing::warn!("Tor: using a PRIVATE TESTING NETWORK instead of the public Tor network");
    }
    b.build().map_err(|e| EgressSetupError::Tor(e.to_string()))
}

/// A fresh private directory, removed on drop.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create(base: Option<&Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = match base {
            Some(b) => b.to_path_buf(),
            None => std::env::var_os("RUNTIME_DIRECTORY")
                .map(|v| {
                    // systemd may list several, separated by ':'.
                    let v = v.to_string_lossy().into_owned();
                    PathBuf::from(v.split(':').next().unwrap_or_default())
                })
                .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
                .unwrap_or_else(std::env::temp_dir),
        };
        let mut suffix = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
            .map_err(|_| std::io::Error::other("no randomness"))?;
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        // Absolute, so that it stays right when the process changes its
        // working directory (main moves it here).
        let path = std::path::absolute(base)?.join(format!("mailveil-tor-{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(RuntimeDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_to_reach_the_endpoint_let_the_next_be_tried() {
        use arti_client::ErrorKind as K;
        for kind in [
            K::RemoteConnectionRefused,
            K::RemoteNetworkFailed,
            K::RemoteNetworkTimeout,
            K::ExitTimeout,
            K::ExitPolicyRejected,
            K::NoExit,
            K::RemoteHostNotFound,
            K::OnionServiceNotFound,
            K::OnionServiceConnectionFailed,
            K::RelayTooBusy,
        ] {
            assert!(tor_kind_error(kind).may_try_next(), "{kind:?}");
        }
        for kind in [K::BootstrapRequired, K::ForbiddenStreamTarget, K::Internal] {
            assert!(!tor_kind_error(kind).may_try_next(), "{kind:?}");
        }
    }
}
