//! A power cut, simulated in-process: what survives a power cut is what was flushed. The
//! journal's WAL flush is replaced by one that also copies the `-wal` file as it is at
//! that moment (the durable image) and then really flushes. While writers append, the
//! test "cuts the power" at several points: it takes the list of appends acknowledged so
//! far, then builds a crash image from the main file and the durable WAL image followed
//! by a random part of what was written after it (a disk may keep some unflushed
//! writes). Opening the image, every acknowledged message must be there, with its
//! payload, and the file must pass `PRAGMA integrity_check`.
//!
//! The same cut with `synchronous = "normal"` (no flush before the acknowledgement)
//! loses acknowledged messages: the control that shows the test can fail, and the loss
//! window docs/journal.md states for `normal`.
//!
//! The writes stay below SQLite's auto-checkpoint (1,000 WAL pages), so the WAL only
//! grows and the main file does not change while the power is "on": the image is then
//! exactly "flushed prefix + some later bytes".
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use edge_agent::journal::{
    FILE_NAME, Journal, JournalConfig, JournalEnv, NewEntry, Qos, SyncMode, WalSync,
};

/// A flush that records the WAL's content at the time it was called.
#[derive(Debug, Default)]
struct Recording {
    durable: Mutex<Vec<u8>>,
}

impl WalSync for Recording {
    fn sync(&self, wal: &File) -> io::Result<()> {
        let len = wal.metadata()?.len();
        let mut image = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        wal.read_exact_at(&mut image, 0)?;
        wal.sync_data()?;
        // The journal runs one flusher: flushes come one after another.
        *self.durable.lock().map_err(|_| io::Error::other("lock"))? = image;
        Ok(())
    }
}

const WRITERS: usize = 8;
const PER_WRITER: usize = 20;
const CUTS: [usize; 3] = [30, 80, 140];

/// Acknowledged appends: seq -> payload.
type Acked = Arc<Mutex<BTreeMap<u64, Vec<u8>>>>;

/// Copies the main file and a crash WAL (durable image + `extra` bytes of what followed)
/// into `dir`; returns the path of the copied journal.
fn crash_image(src: &Path, durable: &[u8], extra: f64, dir: &Path) -> PathBuf {
    let mut wal_path = src.as_os_str().to_owned();
    wal_path.push("-wal");
    let now = std::fs::read(PathBuf::from(wal_path)).unwrap_or_default();
    let mut wal = durable.to_vec();
    if now.len() > wal.len() && now.starts_with(durable) {
        let later = now.len() - wal.len();
        let keep = (later as f64 * extra) as usize;
        wal.extend_from_slice(&now[durable.len()..durable.len() + keep]);
    }
    std::fs::create_dir_all(dir).unwrap();
    let dst = dir.join(FILE_NAME);
    std::fs::copy(src, &dst).unwrap();
    let mut dst_wal = dst.as_os_str().to_owned();
    dst_wal.push("-wal");
    std::fs::write(PathBuf::from(dst_wal), wal).unwrap();
    dst
}

/// Runs the writers, cutting the power at each of `CUTS` acknowledged appends; returns,
/// per cut, how many acknowledged messages the crash image lost.
async fn run(sync: SyncMode) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let recording = Arc::new(Recording::default());
    let env = JournalEnv {
        wal_sync: recording.clone(),
        ..JournalEnv::default()
    };
    let config = JournalConfig {
        synchronous: sync,
        min_free_disk_bytes: 0,
        ..JournalConfig::default()
    };
    let journal = Journal::open_with_env(&path, &config, env).await.unwrap();
    let main_file = std::fs::read(&path).unwrap();
    let acked: Acked = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let journal = journal.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let payload = format!("writer {w} message {i}").into_bytes();
                let entry = NewEntry::new(format!("t/{w}"), payload.clone(), Qos::AtLeastOnce);
                let seq = journal.append(entry).await.unwrap();
                acked.lock().unwrap().insert(seq, payload);
            }
        }));
    }
    let mut lost = Vec::new();
    for (k, cut) in CUTS.into_iter().enumerate() {
        // Bounded wait for the cut point.
        for _ in 0..2000 {
            if acked.lock().unwrap().len() >= cut {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // What the devices were told is on disk, then what is on disk.
        let told = acked.lock().unwrap().clone();
        assert!(told.len() >= cut, "only {} acknowledged", told.len());
        let durable = recording.durable.lock().unwrap().clone();
        // The model's premise: no checkpoint yet, the main file is as it was opened.
        assert!(
            std::fs::read(&path).unwrap() == main_file,
            "a checkpoint changed the main file: write less in this test"
        );
        let extra = [0.0, 0.5, 1.0][k % 3];
        let image = crash_image(&path, &durable, extra, &dir.path().join(format!("cut{k}")));
        let recovered = Journal::open(&image, &JournalConfig::default())
            .await
            .expect("the crash image opens");
        assert!(
            recovered.integrity_check().await.unwrap().is_empty(),
            "integrity_check of the crash image"
        );
        let entries: BTreeMap<u64, Vec<u8>> = recovered
            .peek(10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.payload.to_vec()))
            .collect();
        recovered.close().await.unwrap();
        let mut missing = 0;
        for (seq, payload) in &told {
            match entries.get(seq) {
                Some(p) => assert_eq!(p, payload, "entry {seq} changed"),
                None => missing += 1,
            }
        }
        lost.push(missing);
    }
    for w in writers {
        w.await.unwrap();
    }
    journal.close().await.unwrap();
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_keeps_every_acknowledged_message_through_a_power_cut() {
    let lost = run(SyncMode::Full).await;
    assert_eq!(
        lost,
        vec![0; CUTS.len()],
        "acknowledged messages lost per cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_loses_acknowledged_messages_in_the_same_cut() {
    // No flush before the acknowledgement: the durable image stays empty, so a cut that
    // keeps nothing unflushed (the first) loses everything acknowledged so far.
    let lost = run(SyncMode::Normal).await;
    assert!(lost[0] >= CUTS[0], "{lost:?}");
}
