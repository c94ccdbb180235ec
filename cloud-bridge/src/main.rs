//! The `cloud-bridge` command.
//!
//! Errors are printed as one line, `cloud-bridge: error: ...` with their causes, never as
//! a debug dump with a backtrace (whatever `RUST_BACKTRACE` says: backtraces are for
//! crashes). Exit status 2 for errors the user can fix (the configuration, a bad argument,
//! the TLS files a listener names), 1 for the others.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud_bridge::config::Config;
use cloud_bridge::server::Server;
use cloud_bridge::{admin, auth};
use tokio_util::sync::CancellationToken;

/// MQTT server whose storage is Apache RocketMQ Light Message Queues.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in defaults (conf/cloud-bridge.toml).
    #[arg(long, short, global = true, env = "CLOUD_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Serve even with a secret that ships in this repository (`demo-secret-change-me`,
    /// `change-me`): for a local demo only, anyone who knows it can connect.
    #[arg(long, global = true)]
    insecure_demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MQTT (the default).
    Run,
    /// Create the topics on the RocketMQ cluster and write the kvconfig meta.
    Init,
    /// Manage the wildcard filters in kvconfig.
    Wildcard {
        #[command(subcommand)]
        action: WildcardAction,
    },
    /// Check a configuration file and exit.
    Validate,
    /// Print the password rocketmq-mqtt's HmacSHA1 scheme expects for a client id.
    Password {
        /// The client id.
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum WildcardAction {
    /// Register a filter such as `t1/+/temp`.
    Add { filter: String },
    /// Unregister a filter.
    Remove { filter: String },
    /// List the filters of every first-level topic.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match command(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-bridge: error: {e:#}");
            if is_users_to_fix(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether `e` is one the user caused and can fix (exit status 2).
fn is_users_to_fix(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<cloud_bridge::Error>(),
            Some(
                cloud_bridge::Error::Config { .. }
                    | cloud_bridge::Error::Invalid(_)
                    | cloud_bridge::Error::Mqtt(mqtt::Error::TlsFile { .. })
            )
        ) || matches!(
            cause.downcast_ref::<mqtt::Error>(),
            Some(mqtt::Error::TlsFile { .. })
        )
    })
}

fn command(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run if config.uses_placeholder_secret() && !cli.insecure_demo => {
                Err(cloud_bridge::Error::Config {
                    origin: cli
                        .config
                        .as_deref()
                        .map_or("built-in defaults".into(), |p| p.display().to_string()),
                    reason: format!(
                        "auth.secret_key is a secret shipped with cloud-bridge, so anyone could connect: {}; or pass --insecure-demo for a local demo",
                        cloud_bridge::config::SECRET_HINT
                    ),
                }
                .into())
            }
            Command::Run => {
                if config.uses_placeholder_secret() {
                    tracing::warn!("--insecure-demo: clients authenticate with a secret shipped with cloud-bridge");
                }
                run(config).await
            }
            Command::Validate => {
                println!(
                    "{}: valid",
                    cli.config
                        .as_deref()
                        .map_or("built-in defaults".into(), |p| p.display().to_string())
                );
                Ok(())
            }
            Command::Password { client_id } => {
                println!(
                    "{}",
                    auth::hmac_password(&config.auth.secret_key, &client_id)
                );
                Ok(())
            }
            Command::Init => {
                let report = admin::init(&config).await?;
                for (topic, brokers) in report.topics {
                    println!("topic {topic} on {}", brokers.join(","));
                }
                for (k, v) in report.kv {
                    println!("kvconfig LMQ {k} = {v}");
                }
                if config.uses_placeholder_secret() {
                    println!(
                        "note: auth.secret_key is a shipped placeholder and `cloud-bridge run` refuses it: {}",
                        cloud_bridge::config::SECRET_HINT
                    );
                }
                Ok(())
            }
            Command::Wildcard { action } => {
                match action {
                    WildcardAction::Add { filter } => {
                        let list = admin::wildcard_add(&config, &filter).await?;
                        println!("{}", list.join(","));
                    }
                    WildcardAction::Remove { filter } => {
                        let list = admin::wildcard_remove(&config, &filter).await?;
                        println!("{}", list.join(","));
                    }
                    WildcardAction::List => {
                        for (first, list) in admin::wildcard_list(&config).await? {
                            println!("{first}: {}", list.join(","));
                        }
                    }
                }
                Ok(())
            }
        }
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Watch for SIGTERM before starting, so a stop during start-up is graceful too.
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        mqtt::signal::terminated().await;
        mqtt::systemd::stopping();
        signal_stop.cancel();
    });
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let server = Server::start(config).await?;
    // Listeners are bound and the RocketMQ client is set up: ready for systemd.
    let bound = names
        .iter()
        .filter_map(|n| server.local_addr(n).map(|a| (n.as_str(), a)));
    mqtt::systemd::ready(&mqtt::systemd::listening_status("cloud-bridge", bound));
    let watchdog = CancellationToken::new();
    tokio::spawn(mqtt::systemd::run_watchdog(watchdog.clone()));
    server.run_until(stop).await;
    watchdog.cancel();
    Ok(())
}
