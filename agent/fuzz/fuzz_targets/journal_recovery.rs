//! Journal recovery from torn or damaged files.
//!
//! A real journal is built once and its files copied as a kill -9 leaves them (main file
//! plus WAL). Each input then either is the main file itself, or truncates / patches the
//! main file or the WAL of that image. The damaged journal is opened and used; opening
//! must end in `Ok` or a clean error, never a panic (on any thread) or a dead journal
//! thread. The deterministic cousin is `agent/tests/journal_torn.rs`.
#![no_main]

use std::sync::{Arc, OnceLock};

use edge_agent::Error;
use edge_agent::journal::{
    Cursor, FixedDisk, Journal, JournalConfig, JournalEnv, ManualClock, NewEntry, Qos, ReadOrder,
    SyncMode,
};
use libfuzzer_sys::fuzz_target;

struct Image {
    db: Vec<u8>,
    wal: Vec<u8>,
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
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal.db");
            let j = Journal::open_with_env(&path, &config(), env())
                .await
                .expect("open");
            for i in 0..300u32 {
                let payload = vec![(i % 251) as u8; 50 + (i as usize * 37) % 2000];
                let e = NewEntry::new(format!("t/{}", i % 5), payload, Qos::AtLeastOnce);
                j.append(e).await.expect("append");
                if i % 4 == 3 {
                    j.confirm(&[u64::from(i)]).await.expect("confirm");
                }
            }
            let db = std::fs::read(&path).expect("db");
            let wal = std::fs::read(dir.path().join("journal.db-wal")).unwrap_or_default();
            j.close().await.expect("close");
            Image { db, wal }
        })
    })
}

fn word(data: &[u8], at: usize) -> usize {
    let mut b = [0u8; 4];
    for (i, x) in data.iter().skip(at).take(4).enumerate() {
        b[i] = *x;
    }
    u32::from_le_bytes(b) as usize
}

/// Applies patches `(offset u32, len u8, bytes)` from `data` to `file`.
fn patch(file: &mut [u8], mut data: &[u8]) {
    while data.len() >= 5 && !file.is_empty() {
        let at = word(data, 0) % file.len();
        let n = (data[4] as usize).min(data.len() - 5);
        let end = (at + n).min(file.len());
        file[at..end].copy_from_slice(&data[5..5 + (end - at)]);
        data = &data[5 + n..];
    }
}

fn damaged(data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let img = image();
    let (mode, rest) = match data.split_first() {
        Some((m, r)) => (*m % 5, r),
        None => (0, data),
    };
    let mut db = img.db.clone();
    let mut wal = img.wal.clone();
    match mode {
        0 => return (rest.to_vec(), None),
        1 => db.truncate(word(rest, 0) % (db.len() + 1)),
        2 => wal.truncate(word(rest, 0) % (wal.len() + 1)),
        3 => patch(&mut db, rest),
        _ => patch(&mut wal, rest),
    }
    (db, Some(wal))
}

fn clean(e: &Error) {
    assert!(!matches!(e, Error::Closed), "journal thread died: {e}");
}

async fn run(db: Vec<u8>, wal: Option<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    std::fs::write(&path, &db).expect("write");
    if let Some(wal) = wal {
        std::fs::write(dir.path().join("journal.db-wal"), wal).expect("write wal");
    }
    let j = match Journal::open_with_env(&path, &config(), env()).await {
        Ok(j) => j,
        Err(e) => {
            clean(&e);
            let after = std::fs::read(&path).expect("reread");
            assert!(
                after == db,
                "refused file changed ({} -> {} bytes)",
                db.len(),
                after.len()
            );
            return;
        }
    };
    let mut last = 0;
    match j.next_batch(Cursor::start(ReadOrder::Fifo), 10_000).await {
        Ok(entries) => {
            for e in entries {
                assert!(e.seq > last, "sequence order broken");
                last = e.seq;
            }
        }
        Err(e) => clean(&e),
    }
    if let Err(e) = j.stats().await {
        clean(&e);
    }
    match j
        .append(NewEntry::new("x", &b"y"[..], Qos::AtLeastOnce))
        .await
    {
        Ok(seq) => assert!(seq > last, "sequence number reused"),
        Err(e) => clean(&e),
    }
    if let Err(e) = j.integrity_check().await {
        clean(&e);
    }
    j.close().await.expect("close");
}

fuzz_target!(|data: &[u8]| {
    // Built outside the runtime below: the image is made with a runtime of its own.
    let (db, wal) = damaged(data);
    runtime().block_on(run(db, wal));
});
