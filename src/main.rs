//! The `mailveil` command: `run` the relay, `check` a configuration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mailveil::config::Config;
use mailveil::server::{Relay, Server};

#[derive(Parser)]
#[command(
    name = "mailveil",
    version,
    about = "Metadata-minimizing mail relay proxy"
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    mailveil::tls::install_process_provider();
    match cli.command {
        Command::Check { config, probe } => {
            let config = Config::load(&config)
                .with_context(|| format!("invalid configuration {}", config.display()))?;
            print!("{}", config.summary());
            println!("configuration OK");
            if probe {
                mailveil::logging::init();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the runtime")?;
                if !runtime.block_on(mailveil::probe::run(&config))? {
                    anyhow::bail!("some upstreams could not be reached");
                }
                println!("all upstreams reachable");
            }
            Ok(())
        }
        Command::Run { config } => {
            mailveil::logging::init();
            let config = Config::load(&config)
                .with_context(|| format!("invalid configuration {}", config.display()))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(run(config))
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
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
        println!(
            "ephemeral certificate SHA-256 fingerprint: {}",
            identity.fingerprint
        );
    }
    let relay = Arc::new(Relay::new(config, identity.config).context("setting up")?);
    let server = Server::bind(relay).await.context("binding listeners")?;
    tracing::info!("mailveil {} started", env!("CARGO_PKG_VERSION"));
    server.serve(shutdown_signal()).await;
    tracing::info!("mailveil stopped");
    Ok(())
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
