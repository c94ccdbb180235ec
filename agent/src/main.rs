//! edge-agent command line.
//!
//! - `edge-agent [--state-dir DIR]`: run the agent (the local broker is not implemented
//!   yet: this exits with an error).
//! - `edge-agent journal stats|peek|export|check`: look at the journal offline or while
//!   the agent runs (read-only).
//!
//! The state directory is resolved as documented in `edge_agent::state_dir`:
//! `--state-dir`, else `$STATE_DIRECTORY` (systemd), else `/var/lib/edge-agent` if
//! writable, else `$XDG_STATE_HOME/edge-agent` or `~/.local/state/edge-agent`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use edge_agent::journal::{self, Clock, Journal, render_entry, render_stats};
use edge_agent::state_dir;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(Command::Journal { file, action }) = cli.command else {
        bail!(
            "the local MQTT broker is not implemented yet; \
             only `edge-agent journal stats|peek|export|check` works so far"
        );
    };
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
