//! Recovery from torn and damaged files, deterministically: a real journal's files, as a
//! kill -9 leaves them (main file + WAL copied while the journal is open), are truncated
//! at many points or overwritten in places, then opened. Every open must end in `Ok` or
//! a clean `Err` naming the file: no panic (also not on the journal thread), no
//! `Error::Closed` from a dead thread, and a refused file is left byte-for-byte intact.
//! The fuzz target `agent/fuzz/fuzz_targets/journal_recovery.rs` does the same with
//! arbitrary damage.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use edge_agent::Error;
use edge_agent::journal::{
    Cursor, FixedDisk, Journal, JournalConfig, JournalEnv, ManualClock, NewEntry, Qos, ReadOrder,
    SyncMode,
};

static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

fn watch_panics() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn config() -> JournalConfig {
    JournalConfig {
        synchronous: SyncMode::Off,
        min_free_disk_bytes: 0,
        ..JournalConfig::default()
    }
}

fn env() -> JournalEnv {
    JournalEnv {
        clock: Arc::new(ManualClock::new(1_000_000)),
        disk: Arc::new(FixedDisk::new(u64::MAX / 4)),
        ..JournalEnv::default()
    }
}

/// Files of a journal as a crash leaves them: (main file, WAL).
struct Image {
    _dir: tempfile::TempDir,
    db: Vec<u8>,
    wal: Vec<u8>,
}

async fn make_image() -> Image {
    image_of(1500, 100, 3000).await
}

/// `entries` appends of `base + (i * 37) % spread` bytes; every 5th also confirms one.
async fn image_of(entries: u32, base: usize, spread: usize) -> Image {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let j = Journal::open_with_env(&path, &config(), env())
        .await
        .expect("open");
    // 1500 entries are about 1.5 WAL checkpoints' worth; confirms leave free pages behind.
    for i in 0..entries {
        let payload = vec![(i % 251) as u8; base + (i as usize * 37) % spread];
        let e = NewEntry::new(format!("t/{}", i % 7), payload, Qos::AtLeastOnce);
        j.append(e).await.expect("append");
        if i % 5 == 4 {
            j.confirm(&[u64::from(i) - 2]).await.expect("confirm");
        }
    }
    let db = std::fs::read(&path).expect("read db");
    let wal = std::fs::read(dir.path().join("journal.db-wal")).expect("read wal");
    assert!(wal.len() > 32, "the image has a WAL");
    j.close().await.expect("close");
    Image { _dir: dir, db, wal }
}

/// Opens `db` (+ `wal`) in a fresh directory and uses it; panics only on a broken promise.
async fn open_damaged(db: &[u8], wal: Option<&[u8]>) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    std::fs::write(&path, db).expect("write db");
    if let Some(wal) = wal {
        std::fs::write(dir.path().join("journal.db-wal"), wal).expect("write wal");
    }
    let outcome = match Journal::open_with_env(&path, &config(), env()).await {
        Err(e) => {
            refused_cleanly(&e, &path);
            let after = std::fs::read(&path).expect("reread");
            assert!(
                after == db,
                "refused file changed ({} -> {} bytes)",
                db.len(),
                after.len()
            );
            Outcome::Refused
        }
        Ok(j) => {
            exercise(&j).await;
            j.close().await.expect("close");
            Outcome::Opened
        }
    };
    assert!(!PANICKED.load(Ordering::SeqCst), "a thread panicked");
    outcome
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Opened,
    Refused,
}

fn refused_cleanly(e: &Error, path: &Path) {
    assert!(!matches!(e, Error::Closed), "journal thread died: {e}");
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error names no file: {text}"
    );
}

/// Every operation on a journal that opened must answer `Ok` or a clean `Err`.
async fn exercise(j: &Journal) {
    let check = |r: Result<(), Error>| {
        if let Err(e) = r {
            refused_cleanly(&e, j.path());
        }
    };
    let mut last = 0;
    let mut cursor = Cursor::start(ReadOrder::Fifo);
    loop {
        match j.next_batch(cursor, 500).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                for e in &page {
                    assert!(e.seq > last, "sequence order broken");
                    last = e.seq;
                }
                cursor.advance_past(&page);
            }
            Err(e) => {
                refused_cleanly(&e, j.path());
                break;
            }
        }
    }
    check(j.stats().await.map(|_| ()));
    let appended = j
        .append(NewEntry::new("after/crash", &b"x"[..], Qos::AtLeastOnce))
        .await;
    if let Ok(seq) = appended {
        assert!(seq > last, "a sequence number was reused");
    }
    check(appended.map(|_| ()));
    check(j.confirm(&[1, 2, 3]).await.map(|_| ()));
    check(j.integrity_check().await.map(|_| ()));
}

/// Interesting cut points in a file of `len` bytes: edges, page and frame boundaries.
fn cut_points(len: usize, unit: usize, header: usize) -> Vec<usize> {
    let mut points = vec![
        0,
        1,
        header - 1,
        header,
        header + 1,
        len - 1,
        len / 2,
        len / 3,
    ];
    let mut at = header;
    let step = (len / 24).max(unit);
    while at < len {
        let boundary = at - at % unit + header % unit;
        points.extend([
            boundary.saturating_sub(1),
            boundary,
            boundary + 24,
            boundary + 25,
        ]);
        at += step;
    }
    points.retain(|p| *p < len);
    points.sort_unstable();
    points.dedup();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_wal_recovers_a_prefix_of_commits() {
    watch_panics();
    let image = make_image().await;
    let frame = 24 + 4096;
    // A torn WAL tail is what SQLite's recovery is for: every cut must open.
    for cut in cut_points(image.wal.len(), frame, 32) {
        let outcome = open_damaged(&image.db, Some(&image.wal[..cut])).await;
        assert_eq!(outcome, Outcome::Opened, "WAL cut at {cut}");
    }
    assert_eq!(open_damaged(&image.db, None).await, Outcome::Opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_main_file_opens_or_is_refused() {
    watch_panics();
    let image = make_image().await;
    let mut refused = 0;
    for cut in cut_points(image.db.len(), 4096, 100) {
        for wal in [None, Some(&image.wal[..])] {
            if open_damaged(&image.db[..cut], wal).await == Outcome::Refused {
                refused += 1;
            }
        }
    }
    eprintln!("truncation: {refused} refused");
    assert!(refused > 0, "no truncation was detected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_pages_are_detected_or_harmless() {
    watch_panics();
    let image = make_image().await;
    let mut refused = 0;
    let len = image.db.len();
    for (i, at) in (0..len).step_by((len / 40).max(1)).enumerate() {
        let mut db = image.db.clone();
        let end = (at + 64 + (i * 97) % 4000).min(len);
        for (k, b) in db[at..end].iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(31).wrapping_add(i as u8);
        }
        if open_damaged(&db, None).await == Outcome::Refused {
            refused += 1;
        }
        let mut wal = image.wal.clone();
        let wat = at % wal.len();
        let wend = (wat + 200).min(wal.len());
        wal[wat..wend].fill(0xA5);
        open_damaged(&image.db, Some(&wal)).await;
    }
    eprintln!("overwrite: {refused} refused");
    assert!(refused > 0, "no damage was detected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_keeps_its_wal_unmerged() {
    // Found by the fuzz target: the main file torn inside a page while the whole history
    // is still in the WAL. Closing the refused connection used to checkpoint the WAL into
    // the file; now the file and the WAL stay as they were.
    watch_panics();
    let image = image_of(300, 50, 2000).await;
    let mut refused = 0;
    for cut in [15104, 15105, 20000, 4096 * 7 + 1] {
        if open_damaged(&image.db[..cut], Some(&image.wal)).await == Outcome::Refused {
            refused += 1;
        }
    }
    assert!(refused > 0, "no torn main file was refused");
}

#[tokio::test]
async fn garbage_and_foreign_files_are_refused_untouched() {
    watch_panics();
    for bytes in [
        vec![0u8; 100],
        b"SQLite format 3\0garbage".to_vec(),
        vec![0xFF; 8192],
    ] {
        assert_eq!(open_damaged(&bytes, None).await, Outcome::Refused);
    }
    // An empty file is an empty database: it becomes a new journal.
    assert_eq!(open_damaged(&[], None).await, Outcome::Opened);
}
