//! Unit tests of the journal through its async API (and the batch path directly).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::store::{Record, Store, StoreOptions};
use super::writer::{Command, Op};
use super::*;
use crate::error::QuotaReason;

fn config() -> JournalConfig {
    JournalConfig {
        min_free_disk_bytes: 0,
        sweep_interval_secs: 0,
        ..JournalConfig::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
    disk: FixedDisk,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        Fixture {
            _dir: dir,
            path,
            clock: ManualClock::new(1_000_000),
            disk: FixedDisk::new(u64::MAX / 4),
        }
    }

    async fn open(&self, cfg: &JournalConfig) -> Journal {
        let env = JournalEnv {
            clock: Arc::new(self.clock.clone()),
            disk: Arc::new(self.disk.clone()),
            ..JournalEnv::default()
        };
        Journal::open_with_env(&self.path, cfg, env)
            .await
            .expect("open journal")
    }
}

fn msg(topic: &str, payload: &str) -> NewEntry {
    NewEntry::new(topic, payload.as_bytes().to_vec(), Qos::AtLeastOnce)
}

fn with_priority(topic: &str, payload: &str, p: Priority) -> NewEntry {
    NewEntry {
        priority: Some(p),
        ..msg(topic, payload)
    }
}

async fn all(j: &Journal) -> Vec<u64> {
    let entries = j.peek(MAX).await.expect("peek");
    entries.iter().map(|e| e.seq).collect()
}

const MAX: usize = 10_000;

#[tokio::test]
async fn append_read_confirm_in_sequence_order() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    for (i, t) in ["a/1", "b/1", "a/2"].iter().enumerate() {
        assert_eq!(j.append(msg(t, "x")).await.expect("append"), i as u64 + 1);
    }
    let batch = j.next_batch(Cursor::fifo_after(1), 10).await.expect("read");
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(batch[0].topic, "b/1");
    assert_eq!(batch[0].received_ms, 1_000_000);
    assert_eq!(j.confirm(&[1, 3, 99]).await.expect("confirm"), 2);
    assert_eq!(all(&j).await, vec![2]);
    let s = j.stats().await.expect("stats");
    assert_eq!((s.entries, s.bytes, s.last_seq), (1, 4, 3));
    assert_eq!(s.counters.get(Counter::Appended), 3);
    assert_eq!(s.counters.get(Counter::Confirmed), 2);
    assert!(j.integrity_check().await.expect("check").is_empty());
}

#[tokio::test]
async fn sequence_numbers_are_never_reused() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    j.append(msg("t", "1")).await.expect("append");
    j.append(msg("t", "2")).await.expect("append");
    j.confirm(&[1, 2]).await.expect("confirm");
    j.close().await.expect("close");
    let j = f.open(&config()).await;
    assert_eq!(j.append(msg("t", "3")).await.expect("append"), 3);
    let s = j.stats().await.expect("stats");
    assert_eq!(s.counters.get(Counter::Confirmed), 2, "counters persist");
    assert_eq!(s.entries, 1);
}

#[tokio::test]
async fn priority_first_reads_with_a_cursor() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    let classes = [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::Critical,
        Priority::Low,
    ];
    for p in classes {
        j.append(with_priority("t", "x", p)).await.expect("append");
    }
    let mut cursor = Cursor::start(ReadOrder::PriorityFirst);
    let mut order = Vec::new();
    loop {
        let page = j.next_batch(cursor, 2).await.expect("read");
        if page.is_empty() {
            break;
        }
        cursor.advance_past(&page);
        order.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(order, vec![2, 4, 3, 1, 5]);
}

#[tokio::test]
async fn drop_oldest_takes_the_lowest_class_first() {
    let f = Fixture::new();
    let cfg = JournalConfig {
        max_bytes: 40,
        ..config()
    };
    let j = f.open(&cfg).await;
    // Each entry is 10 bytes (topic "t" + 9 payload bytes).
    j.append(with_priority("t", "123456789", Priority::High))
        .await
        .expect("1");
    j.append(with_priority("t", "123456789", Priority::Low))
        .await
        .expect("2");
    j.append(with_priority("t", "123456789", Priority::Normal))
        .await
        .expect("3");
    j.append(with_priority("t", "123456789", Priority::Low))
        .await
        .expect("4");
    j.append(with_priority("t", "123456789", Priority::Normal))
        .await
        .expect("5");
    assert_eq!(all(&j).await, vec![1, 3, 4, 5], "oldest low went first");
    j.append(with_priority("t", "123456789", Priority::Normal))
        .await
        .expect("6");
    assert_eq!(all(&j).await, vec![1, 3, 5, 6]);
    j.append(with_priority("t", "123456789", Priority::Normal))
        .await
        .expect("7");
    assert_eq!(all(&j).await, vec![1, 5, 6, 7], "then the oldest normal");
    // A low message cannot displace normal or high ones.
    let e = j
        .append(with_priority("t", "123456789", Priority::Low))
        .await;
    assert!(
        matches!(e, Err(Error::QuotaExceeded(QuotaReason::Bytes))),
        "{e:?}"
    );
    let s = j.stats().await.expect("stats");
    assert_eq!(s.counters.get(Counter::QuotaDropOldest), 3);
    assert_eq!(s.counters.get(Counter::RejectedQuota), 1);
    assert_eq!(s.bytes, 40);
    let e = j.append(msg("t", &"x".repeat(40))).await;
    assert!(
        matches!(e, Err(Error::QuotaExceeded(QuotaReason::TooLarge))),
        "{e:?}"
    );
}

#[tokio::test]
async fn reject_new_keeps_what_is_stored_and_counts_across_restarts() {
    let f = Fixture::new();
    let cfg = JournalConfig {
        max_bytes: 20,
        when_full: WhenFull::RejectNew,
        ..config()
    };
    let j = f.open(&cfg).await;
    j.append(msg("t", "123456789")).await.expect("1");
    j.append(msg("t", "123456789")).await.expect("2");
    let e = j.append(msg("t", "1")).await.expect_err("over quota");
    assert!(e.is_quota_exceeded());
    j.close().await.expect("close");
    let j = f.open(&cfg).await;
    assert_eq!(all(&j).await, vec![1, 2]);
    let s = j.stats().await.expect("stats");
    assert_eq!(s.counters.get(Counter::RejectedQuota), 1);
    assert_eq!(s.bytes, 20, "bytes recomputed at open");
}

#[tokio::test]
async fn free_disk_watermark_limits_growth() {
    let f = Fixture::new();
    let cfg = JournalConfig {
        min_free_disk_bytes: 1000,
        when_full: WhenFull::RejectNew,
        ..config()
    };
    let j = f.open(&cfg).await;
    // 1020 free, 1000 kept: the journal may grow by (1020 - 1000) / 2 = 10 bytes.
    f.disk.set(1020);
    j.append(msg("t", "123456789")).await.expect("fits");
    f.disk.set(1000);
    let e = j.append(msg("t", "1")).await;
    assert!(
        matches!(e, Err(Error::QuotaExceeded(QuotaReason::Disk))),
        "{e:?}"
    );
    j.close().await.expect("close");
    let cfg = JournalConfig {
        when_full: WhenFull::DropOldest,
        ..cfg
    };
    let j = f.open(&cfg).await;
    j.append(msg("t", "abcdefghi"))
        .await
        .expect("replaces the oldest");
    assert_eq!(all(&j).await, vec![2]);
    let s = j.stats().await.expect("stats");
    assert_eq!(s.counters.get(Counter::RejectedDisk), 1);
    assert_eq!(s.counters.get(Counter::DiskDropOldest), 1);
}

#[tokio::test]
async fn expired_entries_are_never_handed_out_and_are_counted() {
    let f = Fixture::new();
    let cfg = JournalConfig {
        rules: vec![TopicRule {
            filter: "short/#".into(),
            priority: Priority::Low,
            ttl_secs: Some(10),
        }],
        sweep_interval_secs: 3600,
        ..config()
    };
    let j = f.open(&cfg).await;
    j.append(msg("short/a", "x")).await.expect("1");
    j.append(msg("long", "x")).await.expect("2");
    let quick = NewEntry {
        message_expiry: Some(Duration::from_secs(5)),
        ..msg("short/b", "x")
    };
    j.append(quick).await.expect("3");
    let e = j.peek(10).await.expect("peek");
    assert_eq!(e[0].expires_ms, Some(1_010_000));
    assert_eq!(e[0].priority, Priority::Low);
    assert_eq!(
        e[2].expires_ms,
        Some(1_005_000),
        "message expiry is earlier"
    );
    f.clock.advance_ms(5_000);
    assert_eq!(
        all(&j).await,
        vec![1, 2],
        "expired but not yet swept: hidden"
    );
    assert_eq!(j.stats().await.expect("stats").expired_pending, 1);
    f.clock.advance_ms(5_000);
    assert_eq!(j.sweep_expired().await.expect("sweep"), 2);
    let s = j.stats().await.expect("stats");
    assert_eq!((s.entries, s.counters.get(Counter::Expired)), (1, 2));
}

#[tokio::test]
async fn sweeper_task_runs_until_cancelled() {
    let f = Fixture::new();
    let cfg = JournalConfig {
        default_ttl_secs: Some(1),
        sweep_interval_secs: 3600,
        ..config()
    };
    let j = f.open(&cfg).await;
    j.append(msg("t", "x")).await.expect("append");
    f.clock.advance_ms(2_000);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let j = j.clone();
        let cancel = cancel.clone();
        async move { j.run_sweeper(Duration::from_millis(5), cancel).await }
    });
    for _ in 0..200 {
        if j.stats().await.expect("stats").entries == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    task.await.expect("sweeper ends");
    assert_eq!(
        j.stats()
            .await
            .expect("stats")
            .counters
            .get(Counter::Expired),
        1
    );
}

#[tokio::test]
async fn properties_round_trip_and_export_as_jsonl() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    let e = NewEntry {
        retain: true,
        user_properties: vec![("unit".into(), "°C".into())],
        ..msg("s/t", "21.5")
    };
    assert_eq!(e.quota_bytes(), 3 + 4 + 4 + 3);
    j.append(e).await.expect("append");
    j.append(NewEntry::new("bin", vec![0xff, 0x00], Qos::ExactlyOnce))
        .await
        .expect("append");
    let got = j.peek(1).await.expect("peek");
    assert_eq!(
        got[0].user_properties,
        vec![("unit".to_owned(), "°C".to_owned())]
    );
    assert!(got[0].retain);
    let mut out = Vec::new();
    assert_eq!(j.export_jsonl(&mut out).await.expect("export"), 2);
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["payload_utf8"], "21.5");
    assert_eq!(lines[0]["user_properties"][0][1], "°C");
    assert_eq!(lines[1]["payload_base64"], "/wA=");
    assert_eq!(lines[1]["qos"], 2);
    assert!(lines[1].get("payload_utf8").is_none());
}

#[tokio::test]
async fn read_only_handle_reads_but_never_writes() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    j.append(msg("t", "x")).await.expect("append");
    let ro = Journal::open_read_only(&f.path).await.expect("read-only");
    assert!(ro.is_read_only());
    assert_eq!(all(&ro).await, vec![1]);
    let e = ro.append(msg("t", "y")).await;
    assert!(matches!(e, Err(Error::ReadOnly { .. })), "{e:?}");
    assert!(matches!(
        ro.confirm(&[1]).await,
        Err(Error::ReadOnly { .. })
    ));
    ro.close().await.expect("close");
    let missing = f.path.with_file_name("nope.db");
    let e = Journal::open_read_only(&missing).await;
    assert!(matches!(e, Err(Error::NotFound { .. })), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            j.append(msg(&format!("t/{}", i % 10), "x")).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("append");
    }
    let s = j.stats().await.expect("stats");
    assert_eq!(s.entries, 200);
    assert_eq!(s.writer.appends, 200);
    assert!(s.writer.batches < 200, "no group commit: {:?}", s.writer);
    let flushes = s.writer.wal_flushes;
    assert!(
        flushes >= 1 && flushes <= s.writer.batches,
        "{:?}",
        s.writer
    );
}

/// A WAL flush that waits until the test opens the gate, and fails while told to.
#[derive(Debug, Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    fail: bool,
    /// Flushes started, and the WAL's length at the last one.
    started: u64,
    wal_len: u64,
}

impl Gate {
    fn set(&self, open: bool, fail: bool) {
        let mut st = self.state.lock().unwrap();
        st.open = open;
        st.fail = fail;
        self.changed.notify_all();
    }

    fn started(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.started, st.wal_len)
    }
}

impl WalSync for Gate {
    fn sync(&self, wal: &std::fs::File) -> std::io::Result<()> {
        let len = wal.metadata()?.len();
        let mut st = self.state.lock().unwrap();
        st.started += 1;
        st.wal_len = len;
        // Bounded: a test that forgets to open the gate fails instead of hanging.
        let (st, _) = self
            .changed
            .wait_timeout_while(st, Duration::from_secs(20), |st| !st.open)
            .unwrap();
        if st.fail {
            return Err(std::io::Error::other("injected flush failure"));
        }
        wal.sync_data()
    }
}

#[tokio::test]
async fn an_append_is_answered_only_after_its_wal_flush() {
    let f = Fixture::new();
    let gate = Arc::new(Gate::default());
    let env = JournalEnv {
        clock: Arc::new(f.clock.clone()),
        disk: Arc::new(f.disk.clone()),
        wal_sync: gate.clone(),
    };
    let j = Journal::open_with_env(&f.path, &config(), env)
        .await
        .expect("open");
    let pending = tokio::spawn({
        let j = j.clone();
        async move { j.append(msg("t", "first")).await }
    });
    // Committed (another connection sees it) but not answered while the flush waits.
    let reader = Journal::open_read_only(&f.path).await.expect("reader");
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = all(&reader).await;
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, vec![1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "answered before the WAL flush");
    let (started, wal_len) = gate.started();
    assert_eq!(started, 1);
    assert!(wal_len > 0, "the flush was given the journal's WAL");
    gate.set(true, false);
    assert_eq!(pending.await.expect("task").expect("append"), 1);

    // A failed flush fails the append: the caller is not told it is on disk. After it
    // no flush proves anything about earlier pages, so the journal stores nothing more
    // and hands out nothing (entries, confirms); only its figures are served.
    gate.set(true, true);
    let e = j.append(msg("t", "second")).await;
    let e = e.expect_err("answered Ok after a failed flush").to_string();
    assert!(e.contains("-wal") && e.contains("injected"), "{e}");
    gate.set(true, false);
    let e = j.append(msg("t", "third")).await;
    let e = e.expect_err("stored after a failed flush").to_string();
    assert!(e.contains("restart the agent"), "{e}");
    assert!(
        j.peek(10).await.is_err(),
        "entries handed out after a failed flush"
    );
    assert!(
        j.confirm(&[1]).await.is_err(),
        "confirmed after a failed flush"
    );
    let s = j.stats().await.expect("stats");
    assert_eq!(s.writer.wal_flushes, 2);
    assert!(s.writer.wal_flush_failed);
    // "second" was committed before its flush failed; "third" was never stored.
    assert_eq!(all(&reader).await, vec![1, 2]);
    reader.close().await.expect("close reader");
    j.close().await.expect("close");
    // After a restart appends work again.
    let j = f.open(&config()).await;
    assert_eq!(all(&j).await, vec![1, 2]);
    assert_eq!(j.append(msg("t", "fourth")).await.expect("append"), 3);
    j.close().await.expect("close");
}

fn wal_len(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn opening_checkpoints_a_wal_left_by_a_crash_into_the_main_file() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    for p in ["a", "b", "c"] {
        j.append(msg("t", p)).await.expect("append");
    }
    // The files as a crash leaves them: the entries are in the WAL only.
    let crashed = f._dir.path().join("crashed");
    std::fs::create_dir_all(&crashed).expect("dir");
    let copy = crashed.join(FILE_NAME);
    std::fs::copy(&f.path, &copy).expect("copy");
    let mut wal = f.path.clone().into_os_string();
    wal.push("-wal");
    let mut copy_wal = copy.clone().into_os_string();
    copy_wal.push("-wal");
    std::fs::copy(&wal, &copy_wal).expect("copy wal");
    assert!(wal_len(&copy) > 0);
    j.close().await.expect("close");

    // After a failed flush the WAL may be whole only in the page cache: opening writes it
    // into the main file (synced) before anything new is appended after it.
    let j = Journal::open(&copy, &config())
        .await
        .expect("open the copy");
    assert_eq!(wal_len(&copy), 0, "the WAL was not checkpointed at open");
    assert_eq!(all(&j).await, vec![1, 2, 3]);
    j.close().await.expect("close");
}

#[tokio::test]
async fn closed_handles_and_bad_entries_fail_cleanly() {
    let f = Fixture::new();
    let j = f.open(&config()).await;
    let e = j.append(msg("", "x")).await;
    assert!(matches!(e, Err(Error::InvalidEntry(_))), "{e:?}");
    let other = j.clone();
    j.close().await.expect("close");
    assert!(matches!(other.stats().await, Err(Error::Closed)));
    other.close().await.expect("second close is fine");
}

fn record(topic: &str, n: usize) -> Record {
    Record {
        topic: topic.to_owned(),
        payload: vec![7u8; n].into(),
        qos: Qos::AtLeastOnce,
        retain: false,
        priority: Priority::Normal,
        ttl: None,
        message_expiry: None,
        user_properties: Vec::new(),
        size: (topic.len() + n) as u64,
    }
}

#[test]
fn sqlite_full_fails_the_batch_and_loses_nothing() {
    let f = Fixture::new();
    let opts = StoreOptions {
        read_only: false,
        max_bytes: u64::MAX / 2,
        min_free_disk_bytes: 0,
        when_full: WhenFull::RejectNew,
        synchronous: SyncMode::Full,
        sweep_interval_ms: 0,
        quick_check: true,
    };
    let mut store = Store::open(&f.path, opts.clone(), JournalEnv::default()).expect("open");
    let pages: i64 = store
        .conn()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("page_count");
    store
        .conn()
        .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 3))
        .expect("limit pages");
    let mut stored = 0;
    let mut failed = None;
    for _ in 0..50 {
        let (tx, mut rx) = oneshot::channel();
        let mut batch = vec![Command::Append(record("t", 1000), tx)];
        assert!(writer::run_batch(&mut store, &mut batch, &writer::Outbox::Direct).is_none());
        match rx.try_recv().expect("answered") {
            Ok(_) => stored += 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(matches!(failed, Some(Error::DiskFull { .. })), "{failed:?}");
    assert!(stored > 0);
    let s = store.stats().expect("stats");
    assert_eq!(s.entries, stored, "accounting restored after rollback");
    assert_eq!(s.counters.get(Counter::Appended), stored);
    drop(store);
    let store = Store::open(&f.path, opts, JournalEnv::default()).expect("reopen");
    let s = store.stats().expect("stats");
    assert_eq!(
        (s.entries, s.counters.get(Counter::Appended)),
        (stored, stored)
    );
    assert!(store.integrity_check().expect("check").is_empty());
}

#[test]
fn one_batch_answers_each_append_command_with_its_own_outcomes() {
    let f = Fixture::new();
    let opts = StoreOptions {
        read_only: false,
        max_bytes: 500,
        min_free_disk_bytes: 0,
        when_full: WhenFull::RejectNew,
        synchronous: SyncMode::Off,
        sweep_interval_ms: 0,
        quick_check: true,
    };
    let mut store = Store::open(&f.path, opts, JournalEnv::default()).expect("open");
    let (a_tx, mut a) = oneshot::channel();
    let (many_tx, mut many) = oneshot::channel();
    let (stats_tx, mut stats) = oneshot::channel();
    let (d_tx, mut d) = oneshot::channel();
    let (confirm_tx, mut confirm) = oneshot::channel();
    // 70 rows in one command: one INSERT of 64 rows and one of 4, around a refused one.
    let mut burst: Vec<Record> = (0..70).map(|_| record("b", 1)).collect();
    burst.insert(3, record("b", 600));
    let mut batch = vec![
        Command::Append(record("a", 1), a_tx),
        Command::AppendMany(burst, many_tx),
        Command::Run(Op::Stats(stats_tx)),
        Command::Append(record("d", 1), d_tx),
        Command::Run(Op::Confirm(vec![1, 2], confirm_tx)),
    ];
    assert!(writer::run_batch(&mut store, &mut batch, &writer::Outbox::Direct).is_none());
    assert_eq!(a.try_recv().expect("answered").expect("a"), 1);
    let many = many.try_recv().expect("answered").expect("burst");
    assert_eq!(many.len(), 71);
    let mut want = 2;
    for (i, r) in many.into_iter().enumerate() {
        match r {
            Ok(seq) => {
                assert_eq!(seq, want, "burst entry {i}");
                want += 1;
            }
            Err(e) => {
                assert_eq!(i, 3);
                assert!(
                    matches!(e, Error::QuotaExceeded(QuotaReason::TooLarge)),
                    "{e}"
                );
            }
        }
    }
    // The stats ran after the burst and before `d`.
    assert_eq!(
        stats.try_recv().expect("answered").expect("stats").entries,
        71
    );
    assert_eq!(d.try_recv().expect("answered").expect("d"), 72);
    assert_eq!(confirm.try_recv().expect("answered").expect("confirm"), 2);
    let topics: Vec<(i64, String)> = store
        .conn()
        .prepare("SELECT seq, topic FROM entries ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(topics.len(), 70);
    assert_eq!(topics.first(), Some(&(3, "b".to_owned())));
    assert_eq!(topics.last(), Some(&(72, "d".to_owned())));
}
