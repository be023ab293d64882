//! The `mailveil` command: `run` the relay, `check` a configuration, manage
//! the members list (`access add`) and write client settings (`client-config`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mailveil::config::Config;
use mailveil::relay::Relay;
use mailveil::server::Server;

/// Every allocation made through Rust's allocator is zeroed when it is
/// freed (C code's own, such as arti's SQLite or libc's, is not; none of it
/// holds session data): what a
/// session leaves in buffers of rustls, mail-send or tokio (decrypted client
/// input, provider replies) is gone once the session is. mailveil's own
/// buffers wipe themselves as well (`WipedBuf`); this
/// covers the copies they cannot reach. Measured cost: BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: zeroize_alloc::ZeroizingAllocator<std::alloc::System> =
    zeroize_alloc::ZeroizingAllocator(std::alloc::System);

#[derive(Parser)]
#[command(
    name = "mailveil",
    version,
    about = "Metadata-minimizing mail relay proxy",
    long_about = "Metadata-minimizing mail relay proxy.\n\n\
        Mail clients submit (SMTP) and read (IMAP) through mailveil instead of \
        at their provider. It logs in at the provider with each client's own \
        credentials, removes the client's address and device-identifying \
        headers, reaches the provider directly, over SOCKS5 or over its \
        built-in Tor client, and keeps no connection logs and nothing on disk.",
    after_long_help = "FILES:\n  \
        /etc/mailveil/mailveil.toml                 the configuration (the Debian \
        package installs a template to fill in)\n  \
        /usr/share/doc/mailveil/mailveil.example.toml  every key, documented\n  \
        /usr/share/doc/mailveil/README.md           deployment, client set-up, limits\n  \
        /usr/share/mailveil/certbot-deploy-hook     installs a certbot certificate and \
        restarts the service\n\n\
        SIGNALS (run):\n  \
        SIGTERM, SIGINT  stop accepting, let sessions finish (limits.shutdown_grace_secs), exit\n  \
        SIGHUP           read the certificate files again (not under the systemd unit, \
        whose key arrives only at start: restart it instead)\n\n\
        EXIT STATUS:\n  \
        0 on success; 1 on an invalid configuration, a failed probe, or a relay that \
        could not start; 2 on a command-line usage error.\n\n\
        EXAMPLES:\n  \
        mailveil check --config /etc/mailveil/mailveil.toml\n  \
        mailveil check --probe --config /etc/mailveil/mailveil.toml\n  \
        mailveil run --config /etc/mailveil/mailveil.toml\n  \
        mailveil access add --secret /etc/mailveil/access-key >> /etc/mailveil/members\n  \
        mailveil onion-key /etc/mailveil/onion\n  \
        mailveil client-config --config /etc/mailveil/mailveil.toml --format mobileconfig\n  \
        mailveil client-config --host relay.example.org --imap-port 993 --smtp-port 465 \
        --format dclogin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print a summary (no secrets).
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Also reach every upstream through the configured egress (Tor is
        /// bootstrapped first) and report how long each took.
        #[arg(long)]
        probe: bool,
    },
    /// Write a member's mail client settings: an Apple profile, a Delta
    /// Chat login QR code, or the settings as text. Reads the relay's
    /// public settings from --config (on the relay) or from the flags
    /// (anywhere). The relay never serves these over the network.
    ClientConfig {
        /// The relay's configuration (TOML): host name and listeners.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// What to write.
        #[arg(long, value_enum)]
        format: ClientFormat,
        /// The relay's host name, as in its certificate (instead of, or
        /// over, `server.hostname`).
        #[arg(long)]
        host: Option<String>,
        /// The relay's IMAP port (993 and any port but 143: implicit TLS).
        #[arg(long)]
        imap_port: Option<u16>,
        /// The relay's SMTP port (465 and any port but 587: implicit TLS).
        #[arg(long)]
        smtp_port: Option<u16>,
        /// The private CA (PEM) that issued the relay's certificate: a
        /// root payload in the profile, a fingerprint in the text.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// dclogin: let Delta Chat accept a certificate it cannot verify
        /// (a relay with a private CA: Delta Chat trusts public roots only).
        #[arg(long)]
        accept_invalid_certificates: bool,
        /// dclogin: print the URI only, no QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Members only (`[access]`): manage the members list.
    Access {
        #[command(subcommand)]
        action: AccessAction,
    },
    /// Make a key for the relay's onion service (`[onion] key_directory`)
    /// in DIR, as C tor keeps one (hs_ed25519_secret_key, 0600, in a 0700
    /// directory), and print its address. Never overwrites a key.
    OnionKey {
        /// The directory to make the key in (created if missing).
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ClientFormat {
    /// An Apple configuration profile (.mobileconfig) for iOS and macOS.
    Mobileconfig,
    /// A Delta Chat dclogin: URI and its QR code; asks for the address and
    /// password (run it on the member's own machine).
    Dclogin,
    /// The settings as text, for any client.
    Text,
}

#[derive(Subcommand)]
enum AccessAction {
    /// Read a login from standard input (a prompt on a terminal, never the
    /// command line, which shell history keeps) and print the line to add
    /// to the members list. Nothing is read back or written.
    Add {
        /// The access secret (the file LoadCredential delivers).
        #[arg(long, default_value = "/etc/mailveil/access-key")]
        secret: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    mailveil::tls::install_process_provider();
    match cli.command {
        Command::Check { config, probe } => {
            let config = Config::load(&config)
                .with_context(|| format!("invalid configuration {}", config.display()))?;
            mailveil::out!("{}", config.summary());
            check_certificate_files(&config)?;
            check_members(&config)?;
            check_onion_key(&config)?;
            mailveil::outln!("configuration OK");
            if probe {
                mailveil::logging::init();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the runtime")?;
                let mut probed = runtime.block_on(mailveil::probe::run(&config))?;
                // The Tor client's tasks end (and write their state) while
                // its runtime directory still exists; then it is removed.
                runtime.shutdown_timeout(std::time::Duration::from_secs(10));
                let all_ok = std::mem::replace(&mut probed.all_ok, Ok(false));
                drop(probed);
                if !all_ok? {
                    anyhow::bail!("some upstreams could not be reached");
                }
                mailveil::outln!("all upstreams reachable");
            }
            Ok(())
        }
        Command::Access {
            action: AccessAction::Add { secret },
        } => access_add(&secret),
        Command::OnionKey { dir } => onion_key(&dir),
        Command::ClientConfig {
            config,
            format,
            host,
            imap_port,
            smtp_port,
            ca,
            accept_invalid_certificates,
            no_qr,
        } => {
            let config = config
                .map(|path| {
                    Config::load(&path)
                        .with_context(|| format!("invalid configuration {}", path.display()))
                })
                .transpose()?;
            let mut settings = mailveil::client_config::RelaySettings::new(
                config.as_ref(),
                host,
                imap_port,
                smtp_port,
            )?;
            if let Some(ca) = &ca {
                settings = settings.with_ca_file(ca)?;
            }
            if config.as_ref().is_some_and(|c| c.certificate.is_none()) {
                eprintln!(
                    "warning: this relay makes a new self-signed certificate at every start; \
                     clients will have to accept each one. Configure [tls] (README, \"Deploy on \
                     a Debian VPS\")."
                );
            }
            match format {
                ClientFormat::Text => mailveil::out!("{}", settings.text()),
                ClientFormat::Mobileconfig => mailveil::out!(
                    "{}",
                    settings.mobileconfig(mailveil::client_config::random_uuid)
                ),
                ClientFormat::Dclogin => {
                    if settings.ca.is_some() && !accept_invalid_certificates {
                        eprintln!(
                            "warning: Delta Chat trusts public roots only: with a private CA, \
                             add --accept-invalid-certificates"
                        );
                    }
                    client_dclogin(&settings, accept_invalid_certificates, no_qr)?;
                }
            }
            Ok(())
        }
        Command::Run { config } => {
            mailveil::logging::init();
            let hardening =
                mailveil::privacy::process::harden().context("hardening the process")?;
            let descriptors = hardening.descriptors;
            report_hardening(hardening);
            let mut config = Config::load(&config)
                .with_context(|| format!("invalid configuration {}", config.display()))?;
            fit_connections_to_descriptors(&mut config, descriptors);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let Ran {
                relay,
                tor_dir,
                outcome,
            } = runtime.block_on(run(config));
            // Every task, arti's included, is dropped here. Only then is the
            // Tor runtime directory removed for good: the client's own
            // state writer may still recreate files in it while it shuts
            // down, after the directory's first removal.
            runtime.shutdown_timeout(std::time::Duration::from_secs(10));
            // The relay, and with it the Tor client and its runtime
            // directory, goes only now: arti's tasks wrote their state on
            // the way out into a directory that still existed.
            drop(relay);
            if let Some(dir) = tor_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            outcome
        }
    }
}

/// Reads the certificate files as `run` would, and says what it found:
/// the `[tls]` pair, then each listener's own.
fn check_certificate_files(config: &Config) -> anyhow::Result<()> {
    if let (Some(certificate), Some(private_key)) = (&config.certificate, &config.private_key) {
        check_pair(
            "tls.certificate` / `tls.private_key",
            "",
            certificate,
            private_key,
        )?;
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some((certificate, private_key)) = &l.certificate {
            let keys = format!("listen[{i}].certificate` / `listen[{i}].private_key");
            check_pair(&keys, &format!("listen[{i}]: "), certificate, private_key)?;
        }
    }
    Ok(())
}

/// Reads one certificate chain and key, and says what it found.
fn check_pair(
    keys: &str,
    prefix: &str,
    certificate: &std::path::Path,
    private_key: &std::path::Path,
) -> anyhow::Result<()> {
    use mailveil::tls::FilesChecked;
    let checked = mailveil::tls::check_files(certificate, private_key).with_context(|| {
        format!(
            "`{keys}`: unusable; a certificate is needed before \
             the relay can start (README, \"Deploy on a Debian VPS\", for certbot) in {} and {}",
            certificate.display(),
            private_key.display()
        )
    })?;
    match checked {
        FilesChecked::Pair(fingerprint) => {
            mailveil::outln!("{prefix}certificate and key match; certificate SHA-256 {fingerprint}")
        }
        FilesChecked::KeyDeliveredAtStart(fingerprint) => mailveil::outln!(
            "{prefix}certificate read (SHA-256 {fingerprint}); the key {} is delivered by systemd \
             (LoadCredential=) when the service starts, so it is not checked here",
            private_key.display()
        ),
    }
    Ok(())
}

/// `mailveil onion-key DIR`.
#[cfg(feature = "tor")]
fn onion_key(dir: &std::path::Path) -> anyhow::Result<()> {
    let address = mailveil::onion::generate(dir)?;
    mailveil::outln!("{address}");
    eprintln!(
        "onion service key written to {}; keep it secret, and copy the whole \
         directory to keep the address (README, \"An onion service\")",
        dir.display()
    );
    Ok(())
}

#[cfg(not(feature = "tor"))]
fn onion_key(_: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("this mailveil was built without the tor feature")
}

/// Reads the onion service's key as `run` would, when it is at hand.
fn check_onion_key(config: &Config) -> anyhow::Result<()> {
    let Some(onion) = &config.onion else {
        return Ok(());
    };
    let secret = onion.key_directory.join("hs_ed25519_secret_key");
    if secret.starts_with("/run/credentials/") && !secret.exists() {
        mailveil::outln!(
            "onion service key {}: delivered by systemd (LoadCredential=) when the \
             service starts, so it is not checked here",
            secret.display()
        );
        return Ok(());
    }
    #[cfg(feature = "tor")]
    {
        let address = mailveil::onion::address_of(&onion.key_directory)
            .context("`onion.key_directory`: unusable")?;
        mailveil::outln!("onion service address: {address}");
    }
    Ok(())
}

/// Reads the members list as `run` would, when the secret is at hand.
fn check_members(config: &Config) -> anyhow::Result<()> {
    use mailveil::config::SecretSource;
    let Some(access) = &config.access else {
        return Ok(());
    };
    match &access.secret {
        SecretSource::File(_) => {
            let members = mailveil::access::load(access).context("`access`: unusable")?;
            mailveil::outln!(
                "members list: {} member{}, all made with this secret",
                members.len(),
                if members.len() == 1 { "" } else { "s" }
            );
        }
        SecretSource::Credential(name) => {
            std::fs::File::open(&access.list)
                .with_context(|| format!("`access.list`: cannot read {}", access.list.display()))?;
            mailveil::outln!(
                "members list: read at start with the secret systemd delivers as credential \
                 {name} (README, \"Members only\"); not checked here"
            );
        }
    }
    // The packaged unit runs as a dynamic user: only what everyone may
    // read reaches it (the secret comes through LoadCredential instead).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&access.list)?.permissions().mode();
        if mode & 0o004 == 0 {
            mailveil::outln!(
                "warning: {} is not readable by others (mode {:o}): the packaged service runs \
                 as a dynamic user and will not start. chmod 644 it (it names no one)",
                access.list.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// `client-config --format dclogin`: asks for the address and password,
/// prints the URI and its QR code. Nothing is written anywhere else.
fn client_dclogin(
    settings: &mailveil::client_config::RelaySettings,
    accept_invalid_certificates: bool,
    no_qr: bool,
) -> anyhow::Result<()> {
    let address = prompt_line("e-mail address (your login at your provider): ", false)?;
    if address.is_empty() || !address.contains('@') || address.contains(char::is_whitespace) {
        anyhow::bail!("expected an e-mail address: Delta Chat needs one");
    }
    let password = prompt_line("password at your provider (not shown): ", true)?;
    if password.is_empty() {
        anyhow::bail!("expected a password: Delta Chat needs it in the login code");
    }
    let uri = settings.dclogin(&address, &password, accept_invalid_certificates);
    mailveil::outln!("{}", uri.as_str());
    if !no_qr {
        let qr = zeroize::Zeroizing::new(mailveil::client_config::terminal_qr(&uri)?);
        mailveil::out!("{}", qr.as_str());
        eprintln!("Scan it in Delta Chat (add account / \"scan QR code\").");
    }
    eprintln!(
        "It holds your password: do not photograph, save or share it, and clear the \
         terminal afterwards."
    );
    Ok(())
}

/// One line from standard input, after `prompt` on a terminal (with echo
/// off when `secret`), without its line ending; wiped when dropped.
fn prompt_line(prompt: &str, secret: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
    }
    if !(terminal && secret) {
        let mut line = zeroize::Zeroizing::new(String::new());
        stdin.lock().read_line(&mut line)?;
        return Ok(zeroize::Zeroizing::new(
            line.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    read_without_echo()
}

/// One line from the terminal on standard input with echo off. Ctrl-C (or
/// a hang-up, or SIGTERM) must not leave the terminal silent: the signals
/// are caught before echo goes off, the line is read on a blocking thread,
/// and on a signal the terminal is restored before the process ends (exit
/// status 130, as a shell reports SIGINT).
#[cfg(unix)]
fn read_without_echo() -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::BufRead;
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let read = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let fd = rustix::stdio::stdin();
        let before = rustix::termios::tcgetattr(fd)?;
        let mut quiet = before.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &quiet)?;
        let reading = tokio::task::spawn_blocking(|| {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        });
        let read = tokio::select! {
            read = reading => Some(read),
            _ = interrupt.recv() => None,
            _ = hangup.recv() => None,
            _ = terminate.recv() => None,
        };
        let restored =
            rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &before);
        eprintln!();
        let Some(read) = read else {
            std::process::exit(130);
        };
        restored?;
        anyhow::Ok(read??)
    })?;
    Ok(zeroize::Zeroizing::new(
        read.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// `mailveil access add`: one login in, one list line out.
fn access_add(secret: &std::path::Path) -> anyhow::Result<()> {
    let key = mailveil::access::AccessKey::read(secret)
        .context("reading the access secret (--secret)")?;
    let login = prompt_line("login, as members type it in their mail client: ", false)?;
    let typed = login.trim();
    if typed.is_empty() || typed.contains(char::is_whitespace) {
        anyhow::bail!("expected one login (no spaces) on standard input");
    }
    mailveil::outln!("{}", key.member_line(typed));
    eprintln!(
        "add this line to the members list (`access.list`), then restart mailveil; \
         the list is read at start"
    );
    Ok(())
}

fn report_hardening(hardening: mailveil::privacy::process::Hardening) {
    use mailveil::privacy::process::MemoryLock;
    match hardening.memory {
        MemoryLock::Locked => tracing::info!("core dumps off; memory locked"),
        MemoryLock::NotPermitted { limit } => tracing::warn!(
            "core dumps off; memory NOT locked: RLIMIT_MEMLOCK is {} KiB and the process lacks \
             CAP_IPC_LOCK, so pages holding mail or passwords could be swapped to disk. \
             Run with LimitMEMLOCK=infinity (the systemd unit does) or `ulimit -l unlimited`",
            limit / 1024
        ),
        MemoryLock::Failed(reason) => tracing::warn!(
            "core dumps off; memory NOT locked: mlockall failed ({reason}), so pages holding \
             mail or passwords could be swapped to disk"
        ),
    }
}

/// Lowers the connection cap to what the open-file limit can carry, and
/// says so: past it, accepting would fail with EMFILE instead of making
/// room by evicting a session that has not logged in.
fn fit_connections_to_descriptors(config: &mut Config, descriptors: Option<u64>) {
    use mailveil::privacy::process::{DESCRIPTOR_SLACK, connection_cap};
    let configured = config.limits.max_connections;
    let cap = connection_cap(configured, descriptors);
    if cap < configured {
        tracing::warn!(
            "the open-file limit ({}) carries about {cap} connections (two descriptors each, \
             {DESCRIPTOR_SLACK} kept aside), not max_connections = {configured}: serving at \
             most {cap}. Raise it (LimitNOFILE= under systemd, `ulimit -n` elsewhere) to \
             at least {}",
            descriptors.unwrap_or_default(),
            2 * configured as u64 + DESCRIPTOR_SLACK
        );
        config.limits.max_connections = cap;
    }
}

/// What [`run`] leaves to drop and remove once the runtime has stopped:
/// the relay (with the Tor client) and the Tor runtime directory, also
/// when it fails after the relay was made.
struct Ran {
    relay: Option<Arc<Relay>>,
    tor_dir: Option<std::path::PathBuf>,
    outcome: anyhow::Result<()>,
}

/// Runs the relay until SIGTERM or Ctrl-C.
async fn run(config: Config) -> Ran {
    let (relay, certificate, certificate_files) = match prepare(config) {
        Ok(prepared) => prepared,
        Err(e) => {
            return Ran {
                relay: None,
                tor_dir: None,
                outcome: Err(e),
            };
        }
    };
    let tor_dir = relay.tor_runtime_dir().map(std::path::Path::to_path_buf);
    let outcome = serve(
        relay.clone(),
        tor_dir.clone(),
        certificate,
        certificate_files,
    )
    .await;
    Ran {
        relay: Some(relay),
        tor_dir,
        outcome,
    }
}

type CertificateFiles = Option<(std::path::PathBuf, std::path::PathBuf)>;

/// Loads the certificate and makes the relay (which starts Tor).
fn prepare(
    config: Config,
) -> anyhow::Result<(
    Arc<Relay>,
    Arc<mailveil::tls::ServerCertificate>,
    CertificateFiles,
)> {
    let identity = mailveil::tls::server_identity(
        config.certificate.as_deref(),
        config.private_key.as_deref(),
        &config.hostname,
    )
    .context("TLS certificate")?;
    if identity.ephemeral {
        tracing::warn!(
            "no certificate configured: using an ephemeral self-signed certificate, SHA-256 fingerprint {}",
            identity.fingerprint
        );
        mailveil::outln!(
            "ephemeral certificate SHA-256 fingerprint: {}",
            identity.fingerprint
        );
    }
    // Absolute now: the working directory changes below, and SIGHUP reads
    // these files again.
    let certificate_files = match (&config.certificate, &config.private_key) {
        (Some(c), Some(k)) => Some((std::path::absolute(c)?, std::path::absolute(k)?)),
        _ => None,
    };
    let certificate = identity.certificate.clone();
    let relay = Arc::new(Relay::new(config, identity.config).context("setting up")?);
    for own in relay.own_certificates() {
        if own.files.is_none() {
            let address = relay.config().listeners[own.listener].address;
            tracing::warn!(
                "listener {address} has a name of its own and no certificate: using an ephemeral self-signed certificate, SHA-256 fingerprint {}",
                own.fingerprint
            );
            mailveil::outln!(
                "ephemeral certificate of listener {address}, SHA-256 fingerprint: {}",
                own.fingerprint
            );
        }
    }
    Ok((relay, certificate, certificate_files))
}

/// Binds the listeners and serves until SIGTERM or Ctrl-C.
async fn serve(
    relay: Arc<Relay>,
    tor_dir: Option<std::path::PathBuf>,
    certificate: Arc<mailveil::tls::ServerCertificate>,
    certificate_files: CertificateFiles,
) -> anyhow::Result<()> {
    // Everything is loaded: from here on the working directory is the Tor
    // runtime directory (or /). arti's state writer removes a stale
    // "<name>.tmp" by a path relative to the working directory (fs-mistrust
    // 0.16 `write_and_replace`); this keeps that inside its own directory
    // instead of wherever mailveil was started.
    let workdir = tor_dir.unwrap_or_else(|| "/".into());
    std::env::set_current_dir(&workdir).context("changing to the runtime directory")?;
    let server = Server::bind(relay.clone())
        .await
        .context("binding listeners")?;
    tracing::info!(
        "mailveil {} started; egress {}{}",
        env!("CARGO_PKG_VERSION"),
        server.relay().config().egress.mode.name(),
        match server.relay().config().egress.socks5 {
            Some(proxy) => format!(" via {proxy}"),
            None => String::new(),
        }
    );
    #[cfg(unix)]
    tokio::spawn(reload_certificate_on_sighup(
        relay.clone(),
        certificate,
        certificate_files,
    ));
    if let Err(why) = server.serve(shutdown_signal()).await {
        tracing::error!("{why}; mailveil stopped");
        anyhow::bail!("{why}");
    }
    tracing::info!("mailveil stopped");
    Ok(())
}

/// On every SIGHUP, reads the certificate and key again, and those of the
/// listeners with their own: new handshakes get the new certificate; if
/// the files are bad, the current one stays.
#[cfg(unix)]
async fn reload_certificate_on_sighup(
    relay: Arc<Relay>,
    certificate: Arc<mailveil::tls::ServerCertificate>,
    files: Option<(std::path::PathBuf, std::path::PathBuf)>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: certificate reload unavailable");
        return;
    };
    while hangups.recv().await.is_some() {
        match &files {
            None => tracing::warn!(
                "SIGHUP: no certificate configured (ephemeral one in use), nothing to reload"
            ),
            Some((cert, key)) => match certificate.reload(cert, key) {
                Ok(fingerprint) => tracing::info!(
                    "SIGHUP: certificate reloaded, SHA-256 fingerprint {fingerprint}"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: certificate NOT reloaded ({e}); keeping the current one"
                ),
            },
        }
        for own in relay.own_certificates() {
            let Some((cert, key)) = &own.files else {
                continue;
            };
            let address = relay.config().listeners[own.listener].address;
            match own.certificate.reload(cert, key) {
                Ok(fingerprint) => tracing::info!(
                    "SIGHUP: certificate of listener {address} reloaded, SHA-256 fingerprint {fingerprint}"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: certificate of listener {address} NOT reloaded ({e}); keeping the current one"
                ),
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
