//! Meta read from the name server's kvconfig (namespace `LMQ`), refreshed periodically:
//! the first-level topics (`ALL_FIRST_TOPICS`, plus the configured ones) and, per
//! first-level topic, its wildcard filters (key = the topic, value = comma list).
//!
//! The bridge holds no meta of its own: every instance reads the same kvconfig, so a
//! filter added with `cloud-bridge wildcard add` reaches all of them within one refresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::Error;
use crate::rocketmq::{KvMerge, NameServer};

/// kvconfig namespace of rocketmq-mqtt.
pub const NAMESPACE: &str = "LMQ";
/// kvconfig key listing the first-level topics.
pub const ALL_FIRST_TOPICS: &str = "ALL_FIRST_TOPICS";
/// kvconfig key listing rocketmq-mqtt server addresses.
pub const LMQ_CONNECT_NODES: &str = "LMQ_CONNECT_NODES";

#[derive(Debug, Default)]
struct Snapshot {
    first_topics: HashSet<String>,
    wildcards: HashMap<String, Arc<Vec<String>>>,
}

/// The current meta.
#[derive(Debug)]
pub struct Meta {
    configured: Vec<String>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// kvconfig wildcards left out at the last refresh (each is warned about once).
    ignored: std::sync::Mutex<HashSet<String>>,
}

/// Splits a kvconfig comma list.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The wildcard filters of a kvconfig list that can be dispatched into, and those left
/// out: written by another tool, or before the rules of `mqtt::cloud_topic` existed,
/// dispatching into them could split into other queues or wedge the broker.
fn usable_wildcards(first: &str, list: &str) -> (Vec<String>, Vec<String>) {
    let firsts = [first.to_owned()];
    split_list(list)
        .into_iter()
        .partition(|w| crate::lmq::check_wildcard(w, &firsts).is_ok())
}

impl Meta {
    /// Meta with the configured first-level topics and wildcards, before the first refresh.
    pub fn new(first_topics: &[String], wildcards: &[String]) -> Self {
        let mut by_first: HashMap<String, Vec<String>> = HashMap::new();
        for w in wildcards {
            by_first
                .entry(crate::lmq::first_topic(w).to_owned())
                .or_default()
                .push(w.clone());
        }
        let snapshot = Snapshot {
            first_topics: first_topics.iter().cloned().collect(),
            wildcards: by_first
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        };
        Self {
            configured: first_topics.to_vec(),
            snapshot: RwLock::new(Arc::new(snapshot)),
            ignored: std::sync::Mutex::new(HashSet::new()),
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether `first` is a first-level topic.
    pub fn is_first_topic(&self, first: &str) -> bool {
        self.current().first_topics.contains(first)
    }

    /// Every first-level topic (configured and `ALL_FIRST_TOPICS`).
    pub fn first_topics(&self) -> Vec<String> {
        self.current().first_topics.iter().cloned().collect()
    }

    /// The wildcard filters of a first-level topic.
    pub fn wildcards(&self, first: &str) -> Arc<Vec<String>> {
        self.current()
            .wildcards
            .get(first)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds a wildcard filter locally (it was just written to kvconfig).
    pub fn add_wildcard(&self, filter: &str) {
        let first = crate::lmq::first_topic(filter).to_owned();
        let mut guard = match self.snapshot.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut wildcards = guard.wildcards.clone();
        let mut list = wildcards
            .get(&first)
            .map(|l| l.to_vec())
            .unwrap_or_default();
        if !list.iter().any(|f| f == filter) {
            list.push(filter.to_owned());
        }
        wildcards.insert(first, Arc::new(list));
        *guard = Arc::new(Snapshot {
            first_topics: guard.first_topics.clone(),
            wildcards,
        });
    }

    /// Removes a wildcard filter locally (it was just taken out of kvconfig).
    pub fn remove_wildcard(&self, filter: &str) {
        let first = crate::lmq::first_topic(filter);
        let mut guard = match self.snapshot.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(list) = guard.wildcards.get(first) else {
            return;
        };
        let list: Vec<String> = list.iter().filter(|f| *f != filter).cloned().collect();
        let mut wildcards = guard.wildcards.clone();
        wildcards.insert(first.to_owned(), Arc::new(list));
        *guard = Arc::new(Snapshot {
            first_topics: guard.first_topics.clone(),
            wildcards,
        });
    }

    /// Reads kvconfig once: the whole `LMQ` namespace in one request.
    pub async fn refresh(&self, namesrv: &NameServer) -> Result<(), Error> {
        let kv = namesrv.kv_list(NAMESPACE, KvMerge::Lists).await?;
        let mut first_topics: HashSet<String> = self.configured.iter().cloned().collect();
        if let Some(all) = kv.get(ALL_FIRST_TOPICS) {
            first_topics.extend(split_list(all));
        }
        let mut ignored = HashSet::new();
        let wildcards = first_topics
            .iter()
            .filter_map(|first| {
                let (usable, bad) = usable_wildcards(first, kv.get(first)?);
                ignored.extend(bad);
                Some((first.clone(), Arc::new(usable)))
            })
            .collect();
        {
            let mut warned = self
                .ignored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for w in ignored.difference(&warned) {
                warn!(filter = %w, "kvconfig wildcard ignored: not a filter RocketMQ can carry (mqtt::cloud_topic)");
            }
            *warned = ignored;
        }
        let snapshot = Arc::new(Snapshot {
            first_topics,
            wildcards,
        });
        debug!(?snapshot, "meta refreshed");
        match self.snapshot.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        Ok(())
    }

    /// Refreshes every `period` until `shutdown`.
    pub async fn refresh_loop(
        self: Arc<Self>,
        namesrv: Arc<NameServer>,
        period: Duration,
        shutdown: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.refresh(&namesrv).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "kvconfig refresh failed; keeping the last meta");
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_meta_before_refresh() {
        let m = Meta::new(&["t1".into()], &["t1/+".into(), "t1/a/#".into()]);
        assert!(m.is_first_topic("t1"));
        assert!(!m.is_first_topic("t2"));
        assert_eq!(m.wildcards("t1").len(), 2);
        assert!(m.wildcards("t2").is_empty());
        assert_eq!(split_list(" a, b,,c "), vec!["a", "b", "c"]);
        let (usable, ignored) = usable_wildcards("t1", "t1/+,t1/a%b/#,t2/+,t1/x,t1/#");
        assert_eq!(usable, vec!["t1/+", "t1/#"]);
        assert_eq!(ignored, vec!["t1/a%b/#", "t2/+", "t1/x"]);
    }
}
