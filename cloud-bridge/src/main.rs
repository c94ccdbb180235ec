//! The `cloud-bridge` command.

use std::path::PathBuf;

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
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
