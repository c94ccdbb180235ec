//! edge-agent command line.
//!
//! - `edge-agent [--config FILE] [--state-dir DIR] [run]`: run the agent (local broker,
//!   journal) until SIGTERM or SIGINT. Without `--config`, the built-in defaults
//!   (`conf/edge-agent.toml`): 127.0.0.1:1883, anonymous clients on loopback.
//! - `edge-agent validate [--config FILE]`: check a configuration and exit.
//! - `edge-agent passwd`: read a password from standard input, print its Argon2 hash for
//!   `[[auth.users]] password_hash`.
//! - `edge-agent journal stats|peek|export|check`: look at the journal offline or while
//!   the agent runs (read-only).
//! - `edge-agent status [--json]`: what the running agent is doing (asked over its metrics
//!   endpoint, `[metrics] bind`); when it is not running, says so, prints the journal's
//!   offline statistics and exits with status 1.
//!
//! Errors are printed as one line, `edge-agent: error: ...` with their causes, never with
//! a backtrace (whatever `RUST_BACKTRACE` says: backtraces are for crashes). Exit status 2
//! for errors the user can fix (the configuration, the TLS files it names), 1 for others.
//!
//! The state directory is resolved as documented in `edge_agent::state_dir`:
//! `--state-dir`, else `$STATE_DIRECTORY` (systemd), else `/var/lib/edge-agent` if
//! writable, else `$XDG_STATE_HOME/edge-agent` or `~/.local/state/edge-agent`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use edge_agent::config::Config;
use edge_agent::journal::{self, Clock, Journal, render_entry, render_stats};
use edge_agent::server::Agent;
use edge_agent::{auth, metrics, state_dir};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "Gateway agent: local MQTT broker, durable journal, uplink"
)]
struct Cli {
    /// Directory for the agent's data [default: $STATE_DIRECTORY, else /var/lib/edge-agent
    /// if writable, else $XDG_STATE_HOME/edge-agent or ~/.local/state/edge-agent]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Configuration file (TOML) [default: the built-in conf/edge-agent.toml]
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        env = "EDGE_AGENT_CONFIG"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Check a configuration file (or the built-in defaults) and exit.
    Validate,
    /// Hash a password read from standard input (one line) for `[[auth.users]]`.
    Passwd,
    /// What the running agent is doing: listeners, connections, journal, drops, uplink,
    /// sensors (from its metrics endpoint). Exit status 1 when it is not running.
    Status {
        /// Print the endpoint's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the durable journal (read-only; safe while the agent runs).
    Journal {
        /// Journal file [default: <state dir>/journal.db]
        #[arg(long, global = true, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(subcommand)]
        action: JournalAction,
    },
}

#[derive(Debug, Subcommand)]
enum JournalAction {
    /// Depth, bytes, oldest age, per-priority figures and drop counters.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The oldest waiting messages.
    Peek {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Every waiting message to standard output.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Run SQLite's full integrity check.
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match command(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-agent: error: {e:#}");
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
            cause.downcast_ref::<edge_agent::Error>(),
            Some(
                edge_agent::Error::ConfigFile { .. }
                    | edge_agent::Error::Config { .. }
                    | edge_agent::Error::Mqtt(mqtt::Error::TlsFile { .. })
            )
        ) || matches!(
            cause.downcast_ref::<mqtt::Error>(),
            Some(mqtt::Error::TlsFile { .. })
        )
    })
}

fn command(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Journal { file, action } => {
            let path = match file {
                Some(f) => f,
                None => state_dir::resolve(cli.state_dir.as_deref())?.join(journal::FILE_NAME),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(journal_command(path, action))
        }
        Command::Status { json } => {
            let config = Config::load(cli.config.as_deref())?;
            let explicit = cli.state_dir.or_else(|| config.state_dir.clone());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(status_command(&config, explicit, json))
        }
        Command::Validate => {
            let config = Config::load(cli.config.as_deref())?;
            for w in config.warnings() {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: valid",
                cli.config
                    .as_deref()
                    .map_or("built-in defaults".into(), |p| p.display().to_string())
            );
            Ok(())
        }
        Command::Passwd => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("empty password");
            }
            println!("{}", auth::hash_password(password)?);
            Ok(())
        }
        Command::Run => {
            let config = Config::load(cli.config.as_deref())?;
            let explicit = cli.state_dir.or_else(|| config.state_dir.clone());
            let dir = state_dir::resolve(explicit.as_deref())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                // Watch for SIGTERM before starting, so a stop during start-up is graceful too.
                let stop = CancellationToken::new();
                let signal_stop = stop.clone();
                tokio::spawn(async move {
                    mqtt::signal::terminated().await;
                    mqtt::systemd::stopping();
                    signal_stop.cancel();
                });
                let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
                let agent = Agent::start(config, &dir).await?;
                // Listeners are bound and the journal is open: ready for systemd.
                let bound = names
                    .iter()
                    .filter_map(|n| agent.local_addr(n).map(|a| (n.as_str(), a)));
                mqtt::systemd::ready(&mqtt::systemd::listening_status("edge-agent", bound));
                let watchdog = CancellationToken::new();
                tokio::spawn(mqtt::systemd::run_watchdog(watchdog.clone()));
                let result = agent.run_until(stop).await;
                watchdog.cancel();
                result?;
                Ok(())
            })
        }
    }
}

/// `edge-agent status`: asks the running agent; otherwise shows the journal offline.
async fn status_command(
    config: &Config,
    state_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let not_running = match config.metrics_addr()? {
        None => "the metrics endpoint is turned off ([metrics] in the configuration)".to_owned(),
        Some(addr) => {
            match mqtt::metrics::fetch::get(addr, "/status", std::time::Duration::from_secs(5))
                .await
            {
                Ok((200, body)) => {
                    if json {
                        println!("{body}");
                    } else {
                        let snapshot: metrics::Snapshot = serde_json::from_str(&body)
                            .with_context(|| format!("{addr} is not an edge-agent"))?;
                        print!("{}", metrics::render_status(&snapshot, &addr.to_string()));
                    }
                    return Ok(());
                }
                Ok((code, _)) => bail!("{addr} answered HTTP {code}: is it an edge-agent?"),
                Err(e) => format!("nothing answers at http://{addr}/status ({e})"),
            }
        }
    };
    eprintln!("edge-agent is not running: {not_running}");
    let path = state_dir::resolve(state_dir.as_deref())?.join(journal::FILE_NAME);
    eprintln!("the journal, read offline:");
    if let Err(e) = journal_command(path, JournalAction::Stats { json }).await {
        eprintln!("{e:#}");
    }
    bail!("edge-agent is not running")
}

async fn journal_command(path: PathBuf, action: JournalAction) -> anyhow::Result<()> {
    let journal = Journal::open_read_only(&path).await?;
    let result = run(&journal, action).await;
    journal.close().await?;
    result
}

async fn run(journal: &Journal, action: JournalAction) -> anyhow::Result<()> {
    match action {
        JournalAction::Stats { json } => {
            let stats = journal.stats().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", render_stats(&stats));
            }
        }
        JournalAction::Peek { limit } => {
            let entries = journal.peek(limit).await?;
            let now = journal::SystemClock.now_ms();
            let mut out = std::io::stdout().lock();
            for e in &entries {
                writeln!(out, "{}", render_entry(e, now))?;
            }
            if entries.is_empty() {
                writeln!(out, "(journal is empty)")?;
            }
        }
        JournalAction::Export {
            format: ExportFormat::Jsonl,
        } => {
            let mut out = tokio::io::stdout();
            let n = journal.export_jsonl(&mut out).await?;
            eprintln!("exported {n} entries");
        }
        JournalAction::Check => {
            let problems = journal.integrity_check().await?;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{p}");
                }
                bail!("{}: integrity check failed", journal.path().display());
            }
            println!("{}: ok", journal.path().display());
        }
    }
    Ok(())
}
