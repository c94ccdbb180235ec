//! Durable ingest into the journal: appends per second, every append committed before it
//! returns, 100-byte payloads, with 1 and 10 concurrent appenders (each awaits its append
//! before the next, like a publisher with one message in flight) and one appender with
//! 64 appends in flight (one MQTT connection with receive maximum 64), under
//! `synchronous` FULL and NORMAL. Prints the figures and the average group-commit size.
//! The last cases run FULL with every WAL flush made 5 ms slower (an emulated SD card,
//! whose flushes take milliseconds): what group commit and the flush thread sustain
//! there.
//!
//! `cargo bench -p edge-agent --bench journal_ingest` (BENCH_SECS=n to change the 2 s
//! per case; BENCH_DIR to put the files elsewhere than target/tmp).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use edge_agent::journal::{Journal, JournalConfig, JournalEnv, NewEntry, Qos, SyncMode, WalSync};
use tokio::task::JoinSet;

const PAYLOAD: [u8; 100] = [b'x'; 100];

struct Case {
    sync: SyncMode,
    appenders: usize,
    in_flight: usize,
    /// Added to every WAL flush.
    slow_flush: Option<Duration>,
}

/// An fdatasync that takes `0` longer.
#[derive(Debug)]
struct SlowFlush(Duration);

impl WalSync for SlowFlush {
    fn sync(&self, wal: &std::fs::File) -> std::io::Result<()> {
        std::thread::sleep(self.0);
        wal.sync_data()
    }
}

struct Figures {
    appends: u64,
    elapsed: Duration,
    batches: u64,
    batch_appends: u64,
    max_batch: u64,
    flushes: u64,
}

async fn appender(j: Journal, id: usize, in_flight: usize, until: Instant) -> u64 {
    let topic = format!("bench/{id}/data");
    let mut done = 0;
    let mut pending = JoinSet::new();
    loop {
        while pending.len() < in_flight && Instant::now() < until {
            let j = j.clone();
            let e = NewEntry::new(topic.clone(), &PAYLOAD[..], Qos::AtLeastOnce);
            pending.spawn(async move { j.append(e).await });
        }
        match pending.join_next().await {
            Some(Ok(Ok(_))) => done += 1,
            Some(Ok(Err(e))) => {
                eprintln!("append failed: {e}");
                return done;
            }
            Some(Err(e)) => {
                eprintln!("append task failed: {e}");
                return done;
            }
            None => return done,
        }
    }
}

async fn run(dir: &Path, case: &Case, secs: u64) -> Result<Figures, edge_agent::Error> {
    let path = dir.join(format!(
        "bench-{:?}-{}x{}.db",
        case.sync, case.appenders, case.in_flight
    ));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let cfg = JournalConfig {
        synchronous: case.sync,
        max_bytes: 4 * 1024 * 1024 * 1024,
        ..JournalConfig::default()
    };
    let mut env = JournalEnv::default();
    if let Some(d) = case.slow_flush {
        env.wal_sync = Arc::new(SlowFlush(d));
    }
    let j = Journal::open_with_env(&path, &cfg, env).await?;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = JoinSet::new();
    for id in 0..case.appenders {
        tasks.spawn(appender(j.clone(), id, case.in_flight, until));
    }
    let mut appends = 0;
    while let Some(n) = tasks.join_next().await {
        appends += n.unwrap_or(0);
    }
    let elapsed = start.elapsed();
    let w = j.stats().await?.writer;
    j.close().await?;
    Ok(Figures {
        appends,
        elapsed,
        batches: w.batches,
        batch_appends: w.appends,
        max_batch: w.max_batch,
        flushes: w.wal_flushes,
    })
}

/// Plain rusqlite in the same conditions, one INSERT per transaction on this thread: the
/// floor the journal's per-append overhead (channel, thread hop, indexes, counters) adds to.
fn baseline(dir: &Path, sync: SyncMode, secs: u64) -> rusqlite::Result<f64> {
    let path = dir.join(format!("baseline-{sync:?}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", sync.pragma_value())?;
    conn.execute_batch("CREATE TABLE t (seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")?;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < until {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.prepare_cached("INSERT INTO t (topic, payload) VALUES (?1, ?2)")?
            .execute(rusqlite::params!["bench/0/data", &PAYLOAD[..]])?;
        conn.execute_batch("COMMIT")?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("journal_ingest"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "journal ingest, 100-byte payloads, {secs} s per case, files in {}",
        dir.display()
    );
    println!(
        "{:<8} {:>9} {:>9} {:>12} {:>10} {:>9} {:>9}",
        "sync", "appenders", "in-flight", "appends/s", "avg batch", "max batch", "flushes/s"
    );
    for sync in [SyncMode::Full, SyncMode::Normal] {
        match baseline(&dir, sync, secs) {
            Ok(rate) => println!(
                "{:<8} {:>9} {:>9} {:>12.0} {:>10} {:>9}  (plain rusqlite, 1 row per commit)",
                format!("{sync:?}"),
                "-",
                "-",
                rate,
                "1.0",
                1
            ),
            Err(e) => println!("{sync:?} baseline failed: {e}"),
        }
        for (appenders, in_flight) in [(1, 1), (10, 1), (1, 64)] {
            let case = Case {
                sync,
                appenders,
                in_flight,
                slow_flush: None,
            };
            print_case(&rt, &dir, &case, secs);
        }
    }
    for (appenders, in_flight) in [(1, 1), (10, 1), (1, 64), (10, 64)] {
        let case = Case {
            sync: SyncMode::Full,
            appenders,
            in_flight,
            slow_flush: Some(Duration::from_millis(5)),
        };
        print_case(&rt, &dir, &case, secs);
    }
}

fn print_case(rt: &tokio::runtime::Runtime, dir: &Path, case: &Case, secs: u64) {
    let name = match case.slow_flush {
        Some(d) => format!("{:?}+{}ms", case.sync, d.as_millis()),
        None => format!("{:?}", case.sync),
    };
    match rt.block_on(run(dir, case, secs)) {
        Ok(f) => {
            let secs = f.elapsed.as_secs_f64();
            println!(
                "{:<8} {:>9} {:>9} {:>12.0} {:>10.1} {:>9} {:>9.0}",
                name,
                case.appenders,
                case.in_flight,
                f.appends as f64 / secs,
                f.batch_appends as f64 / f.batches.max(1) as f64,
                f.max_batch,
                f.flushes as f64 / secs,
            );
        }
        Err(e) => println!("{name} {}x{}: failed: {e}", case.appenders, case.in_flight),
    }
}
