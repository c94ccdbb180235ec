//! Model-based property test of the journal: random appends, confirms, restarts, clock
//! advances and free-disk changes run against the real journal and against a plain
//! in-memory model; contents, order, accounting and every counter must agree.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_agent::Error;
use edge_agent::error::QuotaReason;
use edge_agent::journal::{
    Counter, Counters, Cursor, FixedDisk, Journal, JournalConfig, JournalEnv, ManualClock,
    NewEntry, Priority, Qos, ReadOrder, SyncMode, TopicRule, WhenFull,
};
use proptest::prelude::*;

const MIN_FREE: u64 = 1000;
const HUGE_DISK: u64 = u64::MAX / 4;
const TOPICS: [&str; 5] = [
    "alarm/fire",
    "tele/m1/raw",
    "tele/m2/raw",
    "status/m1",
    "cfg",
];

fn rules() -> Vec<TopicRule> {
    let rule = |filter: &str, priority, ttl_secs| TopicRule {
        filter: filter.to_owned(),
        priority,
        ttl_secs,
    };
    vec![
        rule("alarm/#", Priority::Critical, None),
        rule("tele/+/raw", Priority::Low, Some(5)),
        rule("status/+", Priority::Normal, Some(20)),
    ]
}

/// The rules of `rules()`, written plainly.
fn classify(topic: &str) -> (Priority, Option<u64>) {
    match topic {
        "alarm/fire" => (Priority::Critical, None),
        "tele/m1/raw" | "tele/m2/raw" => (Priority::Low, Some(5_000)),
        "status/m1" => (Priority::Normal, Some(20_000)),
        _ => (Priority::Normal, None),
    }
}

/// One entry to append.
#[derive(Debug, Clone)]
struct Append {
    topic: usize,
    payload: Vec<u8>,
    priority: Option<Priority>,
    expiry_secs: Option<u8>,
}

impl Append {
    fn entry(&self) -> NewEntry {
        NewEntry {
            priority: self.priority,
            message_expiry: self.expiry_secs.map(|s| Duration::from_secs(s.into())),
            ..NewEntry::new(TOPICS[self.topic], self.payload.clone(), Qos::AtLeastOnce)
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Append),
    /// A publisher's burst, submitted as one command (`submit_many`): up to 80 entries,
    /// so the journal's multi-row INSERTs of 64, 16, ... rows and evictions in the middle
    /// of a burst are exercised.
    Burst(Vec<Append>),
    Confirm(Vec<prop::sample::Index>),
    Restart,
    Advance(u32),
    SetFreeDisk(Option<u16>),
    ReadPriorityFirst,
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High),
        Just(Priority::Critical)
    ]
}

fn append() -> impl Strategy<Value = Append> {
    (
        0..TOPICS.len(),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::option::weighted(0.1, priority()),
        prop::option::weighted(0.2, 0u8..30),
    )
        .prop_map(|(topic, payload, priority, expiry_secs)| Append {
            topic,
            payload,
            priority,
            expiry_secs,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => append().prop_map(Op::Append),
        2 => prop::collection::vec(append(), 1..80).prop_map(Op::Burst),
        3 => prop::collection::vec(any::<prop::sample::Index>(), 0..4).prop_map(Op::Confirm),
        1 => Just(Op::Restart),
        2 => (0u32..12_000).prop_map(Op::Advance),
        1 => prop::option::of(0u16..400).prop_map(Op::SetFreeDisk),
        1 => Just(Op::ReadPriorityFirst),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelEntry {
    topic: String,
    payload: Vec<u8>,
    priority: Priority,
    expires: Option<u64>,
    size: u64,
}

struct Model {
    cfg: JournalConfig,
    entries: BTreeMap<u64, ModelEntry>,
    last_seq: u64,
    counters: Counters,
    now: u64,
    free: u64,
    batch_limit: Option<(u64, QuotaReason)>,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// What every batch does first (sweep interval 0).
    fn sweep(&mut self) {
        let now = self.now;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.expires.is_none_or(|x| x > now));
        self.counters
            .add(Counter::Expired, (before - self.entries.len()) as u64);
    }

    fn reject(&mut self, reason: QuotaReason) -> Result<u64, QuotaReason> {
        let c = match reason {
            QuotaReason::Bytes => Counter::RejectedQuota,
            QuotaReason::Disk => Counter::RejectedDisk,
            QuotaReason::TooLarge => Counter::RejectedTooLarge,
        };
        self.counters.add(c, 1);
        Err(reason)
    }

    /// The byte limit of the batch: the quota, or what the free disk allows, read once
    /// per batch (at its first append) like the journal does.
    fn limit(&mut self, total: u64) -> (u64, QuotaReason) {
        if let Some(l) = self.batch_limit {
            return l;
        }
        let disk = total + self.free.saturating_sub(MIN_FREE) / 2;
        let l = if disk < self.cfg.max_bytes {
            (disk, QuotaReason::Disk)
        } else {
            (self.cfg.max_bytes, QuotaReason::Bytes)
        };
        self.batch_limit = Some(l);
        l
    }

    /// Appends `entries` as one batch: expired entries are swept once, when it begins,
    /// and the disk limit is read once.
    fn append_batch<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a NewEntry>,
    ) -> Vec<Result<u64, QuotaReason>> {
        self.sweep();
        self.batch_limit = None;
        entries.into_iter().map(|e| self.append(e)).collect()
    }

    /// One append inside a batch (the batch swept expired entries when it began).
    fn append(&mut self, e: &NewEntry) -> Result<u64, QuotaReason> {
        let (rule_priority, ttl) = classify(&e.topic);
        let p = e.priority.unwrap_or(rule_priority);
        let size = e.quota_bytes();
        if size > self.cfg.max_bytes {
            return self.reject(QuotaReason::TooLarge);
        }
        let total = self.bytes();
        let (limit, reason) = self.limit(total);
        if total + size > limit {
            if self.cfg.when_full == WhenFull::RejectNew {
                return self.reject(reason);
            }
            let need = total + size - limit;
            let droppable: u64 = self
                .entries
                .values()
                .filter(|x| x.priority <= p)
                .map(|x| x.size)
                .sum();
            if need > droppable {
                return self.reject(reason);
            }
            let mut freed = 0;
            let mut victims = Vec::new();
            for class in Priority::ALL.into_iter().filter(|c| *c <= p) {
                for (seq, x) in self.entries.iter().filter(|(_, x)| x.priority == class) {
                    if freed >= need {
                        break;
                    }
                    freed += x.size;
                    victims.push(*seq);
                }
            }
            for seq in &victims {
                self.entries.remove(seq);
            }
            let c = match reason {
                QuotaReason::Disk => Counter::DiskDropOldest,
                _ => Counter::QuotaDropOldest,
            };
            self.counters.add(c, victims.len() as u64);
        }
        let mut expires = ttl.map(|t| self.now + t);
        if let Some(d) = e.message_expiry {
            let x = self.now + d.as_millis() as u64;
            expires = Some(expires.map_or(x, |y| y.min(x)));
        }
        self.last_seq += 1;
        self.entries.insert(
            self.last_seq,
            ModelEntry {
                topic: e.topic.clone(),
                payload: e.payload.to_vec(),
                priority: p,
                expires,
                size,
            },
        );
        self.counters.add(Counter::Appended, 1);
        Ok(self.last_seq)
    }

    fn confirm(&mut self, seqs: &[u64]) -> u64 {
        self.sweep();
        let n = seqs
            .iter()
            .filter(|s| self.entries.remove(s).is_some())
            .count() as u64;
        self.counters.add(Counter::Confirmed, n);
        n
    }
}

struct Real {
    path: std::path::PathBuf,
    clock: ManualClock,
    disk: FixedDisk,
    journal: Journal,
}

async fn open(path: &Path, cfg: &JournalConfig, clock: &ManualClock, disk: &FixedDisk) -> Journal {
    let env = JournalEnv {
        clock: Arc::new(clock.clone()),
        disk: Arc::new(disk.clone()),
        ..JournalEnv::default()
    };
    Journal::open_with_env(path, cfg, env).await.expect("open")
}

async fn read_all(j: &Journal, order: ReadOrder) -> Vec<(u64, ModelEntry)> {
    let mut cursor = Cursor::start(order);
    let mut out = Vec::new();
    loop {
        let page = j.next_batch(cursor, 7).await.expect("read");
        if page.is_empty() {
            return out;
        }
        cursor.advance_past(&page);
        out.extend(page.into_iter().map(|e| {
            let size = (e.topic.len() + e.payload.len()) as u64;
            let m = ModelEntry {
                topic: e.topic,
                payload: e.payload.to_vec(),
                priority: e.priority,
                expires: e.expires_ms,
                size,
            };
            (e.seq, m)
        }));
    }
}

async fn check(real: &Real, model: &mut Model) {
    model.sweep();
    let got = read_all(&real.journal, ReadOrder::Fifo).await;
    let want: Vec<(u64, ModelEntry)> = model.entries.iter().map(|(s, e)| (*s, e.clone())).collect();
    assert_eq!(got, want, "contents or order differ");
    let stats = real.journal.stats().await.expect("stats");
    assert_eq!(stats.entries, model.entries.len() as u64);
    assert_eq!(stats.bytes, model.bytes());
    assert_eq!(stats.counters, model.counters, "counters differ");
    assert_eq!(stats.last_seq, model.last_seq);
}

async fn run(cfg: JournalConfig, ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    let clock = ManualClock::new(1_000_000);
    let disk = FixedDisk::new(HUGE_DISK);
    let journal = open(&path, &cfg, &clock, &disk).await;
    let mut real = Real {
        path,
        clock,
        disk,
        journal,
    };
    let mut model = Model {
        cfg: cfg.clone(),
        entries: BTreeMap::new(),
        last_seq: 0,
        counters: Counters::default(),
        now: 1_000_000,
        free: HUGE_DISK,
        batch_limit: None,
    };
    for op in ops {
        match op {
            Op::Append(a) => {
                let e = a.entry();
                let want = model.append_batch([&e]).remove(0);
                match (real.journal.append(e).await, want) {
                    (Ok(seq), Ok(w)) => assert_eq!(seq, w),
                    (Err(Error::QuotaExceeded(r)), Err(w)) => assert_eq!(r, w),
                    (got, want) => panic!("append: got {got:?}, model {want:?}"),
                }
            }
            Op::Burst(appends) => {
                let entries: Vec<NewEntry> = appends.iter().map(Append::entry).collect();
                let want = model.append_batch(&entries);
                let pending = real.journal.submit_many(entries).await.expect("submit");
                let got = pending.committed().await.expect("commit");
                assert_eq!(got.len(), want.len());
                for (i, (got, want)) in got.into_iter().zip(want).enumerate() {
                    match (got, want) {
                        (Ok(seq), Ok(w)) => assert_eq!(seq, w, "entry {i} of the burst"),
                        (Err(Error::QuotaExceeded(r)), Err(w)) => assert_eq!(r, w),
                        (got, want) => panic!("burst entry {i}: got {got:?}, model {want:?}"),
                    }
                }
            }
            Op::Confirm(picks) => {
                let seqs: Vec<u64> = model.entries.keys().copied().collect();
                let mut chosen: Vec<u64> = picks
                    .iter()
                    .filter(|_| !seqs.is_empty())
                    .map(|i| seqs[i.index(seqs.len())])
                    .collect();
                chosen.push(model.last_seq + 1000);
                let want = model.confirm(&chosen);
                assert_eq!(real.journal.confirm(&chosen).await.expect("confirm"), want);
            }
            Op::Restart => {
                real.journal.close().await.expect("close");
                real.journal = open(&real.path, &cfg, &real.clock, &real.disk).await;
            }
            Op::Advance(ms) => {
                real.clock.advance_ms(ms.into());
                model.now += u64::from(ms);
            }
            Op::SetFreeDisk(free) => {
                let free = free.map_or(HUGE_DISK, |f| MIN_FREE + u64::from(f));
                real.disk.set(free);
                model.free = free;
            }
            Op::ReadPriorityFirst => {
                model.sweep();
                let got: Vec<u64> = read_all(&real.journal, ReadOrder::PriorityFirst)
                    .await
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                let mut want: Vec<(Priority, u64)> = model
                    .entries
                    .iter()
                    .map(|(s, e)| (e.priority, *s))
                    .collect();
                want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                assert_eq!(got, want.into_iter().map(|(_, s)| s).collect::<Vec<_>>());
            }
        }
        check(&real, &mut model).await;
    }
    real.journal.close().await.expect("close");
    // The file a run leaves behind is healthy.
    let j = open(&real.path, &cfg, &real.clock, &real.disk).await;
    assert!(j.integrity_check().await.expect("integrity").is_empty());
    j.close().await.expect("close");
}

fn config() -> impl Strategy<Value = JournalConfig> {
    (
        40u64..300,
        prop_oneof![Just(WhenFull::DropOldest), Just(WhenFull::RejectNew)],
    )
        .prop_map(|(max_bytes, when_full)| JournalConfig {
            max_bytes,
            when_full,
            min_free_disk_bytes: MIN_FREE,
            synchronous: SyncMode::Off,
            sweep_interval_secs: 0,
            rules: rules(),
            ..JournalConfig::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn journal_matches_model(cfg in config(), ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(cfg, ops));
    }
}
