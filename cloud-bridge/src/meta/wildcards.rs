//! The wildcard filters that bridges register in kvconfig when a client subscribes
//! (`[subscriptions] unregistered = "register"`): their registration, their leases, and
//! the pruning of those that nobody uses any more.
//!
//! A registered wildcard costs every publisher on its first-level topic a match and a
//! dispatch into one more LMQ, for as long as it is listed, and the list is bounded
//! (`[quotas] wildcards_per_first_level`): registrations made for subscribers that left
//! long ago must go. But the list is shared with every other bridge and with rocketmq-mqtt,
//! whose subscribers read the same wildcard LMQs and cannot register anything themselves.
//!
//! # The rule
//! - **Only a bridge's own registrations are ever pruned.** When a SUBSCRIBE makes a bridge
//!   add a filter to the list, the bridge first writes a lease for it to the wildcard
//!   table (`[topics] wildcard_topic`, a compaction topic like the other state tables).
//!   (If that write fails, the filter is registered without one.)
//!   A filter without a lease is pinned: listed by `cloud-bridge init` from the
//!   configuration, by `cloud-bridge wildcard add` (which also turns a leased filter into a
//!   pinned one), by `mqadmin updateKvConfig` as rocketmq-mqtt's documentation says, or
//!   before leases existed. Pinned filters stay until an operator removes them.
//! - **A lease is in use while any subscriber needs the filter:** a live subscription on
//!   any bridge (each bridge renews the leases of its live subscriptions every
//!   [`renew_period`]), or a stored persistent session that has not expired, connected or
//!   not (every bridge reads the session table), because its LMQ must keep filling while
//!   the client is away.
//! - **A lease unused for `[subscriptions] prune_wildcards_after_secs`** (default one day,
//!   `0` = never) is pruned by whichever bridge sees it first: the filter is taken out of
//!   the kvconfig list, then the lease is deleted. Clocks of bridges are compared, so
//!   their skew must stay well below that period.
//! - **A rocketmq-mqtt subscriber that needs a filter** must have it pinned, which
//!   rocketmq-mqtt requires anyway: its servers never register wildcards.
//! - **Races heal.** kvconfig has no compare-and-set, so two writers of one list that read
//!   it at the same moment can each drop the other's change. Within a bridge, every change
//!   of a list is serialized, and a registration reads the list back after writing it and
//!   writes again if its filter is missing. Between bridges (or with `mqadmin`), every bridge
//!   checks, every [`renew_period`], that each filter its live subscriptions read and each
//!   filter an unexpired stored session reads is still listed, and registers it again if
//!   not: the gap is bounded by that period plus one meta refresh.
//! - **A busy bridge is given slack:** a lease is due only once unused for
//!   `prune_wildcards_after_secs` plus two [`renew_period`]s, so that a renewal delayed by
//!   a loaded machine never costs a subscriber its filter.
//!
//! Pruning a filter that was in use is the failure to avoid (a subscriber silently stops
//! receiving); keeping one too long only costs a dispatch. Every choice above errs that way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, UnregisteredWildcards};
use crate::error::Error;
use crate::lmq;
use crate::meta::kvconfig::{self, Meta};
use crate::meta::sessions::{self, StoredSession};
use crate::meta::table::Table;
use crate::rocketmq::{KvMerge, NameServer, Written};

/// How many times a registration writes its list again when reading it back shows that a
/// concurrent writer dropped it.
const REGISTER_ATTEMPTS: usize = 3;

/// How long a prune pass waits for the wildcard and session tables to be read to their end.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The stored lease of one registered filter (key: the filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// When a subscriber last used the filter, ms since the epoch.
    pub last_used_ms: u64,
}

/// How often a bridge renews its leases and checks its filters are listed: a quarter of
/// the prune period, between 1 s and 1 h.
pub fn renew_period(prune_after: Duration) -> Duration {
    if prune_after.is_zero() {
        return Duration::from_secs(3600);
    }
    (prune_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Reads a lease; `None` when the filter has none (it is pinned) or it is unreadable.
pub fn lease(table: &Table, filter: &str) -> Option<Lease> {
    serde_json::from_slice(&table.get(filter)?.value).ok()
}

/// Writes (or renews) the lease of `filter`.
pub async fn write_lease(table: &Table, filter: &str, now_ms: u64) -> Result<(), Error> {
    let value = serde_json::to_vec(&Lease {
        last_used_ms: now_ms,
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    table.put(filter, Bytes::from(value), None).await
}

/// Pins `filter`: it loses its lease and is never pruned.
pub async fn pin(table: &Table, filter: &str) -> Result<(), Error> {
    table.delete(filter).await
}

/// The wildcard filters read by live subscriptions of this bridge, counted.
#[derive(Debug, Clone, Default)]
pub struct InUse(Arc<Mutex<HashMap<String, usize>>>);

/// One subscription's use of a filter; released when dropped.
#[derive(Debug)]
pub struct Held {
    in_use: InUse,
    filter: String,
}

impl InUse {
    /// Notes one more live subscription reading `filter`.
    pub fn hold(&self, filter: &str) -> Held {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(filter.to_owned())
            .or_default() += 1;
        Held {
            in_use: self.clone(),
            filter: filter.to_owned(),
        }
    }

    /// The filters held now.
    pub fn filters(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.in_use.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.filter) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.filter);
            }
        }
    }
}

/// The wildcard filters that the unexpired stored sessions read: their wildcard
/// subscriptions, and the wildcard parts of those spanning first-level topics (under
/// every first-level topic in `firsts`).
fn stored_filters(sessions: &Table, now_ms: u64, firsts: &[String]) -> HashSet<String> {
    sessions
        .select(|_| true)
        .into_iter()
        .filter_map(|(_, e)| serde_json::from_slice::<StoredSession>(&e.value).ok())
        .filter(|s| !s.expired(now_ms))
        .flat_map(|s| s.subscriptions.into_iter().map(|sub| sub.filter))
        .flat_map(|f| {
            if crate::lmq::spans_first_topics(&f) {
                firsts
                    .iter()
                    .flat_map(|first| crate::lmq::parts_under(&f, first))
                    .collect()
            } else {
                vec![f]
            }
        })
        .filter(|f| mqtt::topic::is_wildcard(f))
        .collect()
}

/// The leases that are due for pruning at `now_ms`: unused for longer than `prune_after`
/// plus two [`renew_period`]s of slack, and read by no subscriber known here (`in_use`:
/// this bridge's live subscriptions and every stored session).
pub fn due(
    leases: &[(String, Lease)],
    in_use: &HashSet<String>,
    now_ms: u64,
    prune_after: Duration,
) -> Vec<String> {
    let slack = renew_period(prune_after) * 2;
    let after = u64::try_from((prune_after + slack).as_millis()).unwrap_or(u64::MAX);
    leases
        .iter()
        .filter(|(f, l)| !in_use.contains(f) && now_ms.saturating_sub(l.last_used_ms) > after)
        .map(|(f, _)| f.clone())
        .collect()
}

/// Registration, leases and pruning of wildcard filters, for one bridge. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Wildcards {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namesrv: Arc<NameServer>,
    meta: Arc<Meta>,
    leases: Table,
    sessions: Table,
    in_use: InUse,
    /// `[quotas] wildcards_per_first_level`.
    max_per_first_level: usize,
    /// Whether live subscriptions may register (`[subscriptions] unregistered`).
    register: bool,
    /// `[subscriptions] prune_wildcards_after_secs`.
    prune_after: Duration,
    pruned: AtomicU64,
    /// Held over every read-modify-write of a kvconfig list, so that this bridge's own
    /// registrations and prunes never drop each other.
    list_lock: tokio::sync::Mutex<()>,
}

impl Wildcards {
    /// The registrar of a bridge with `config`, its leases in `leases` and its stored
    /// sessions in `sessions`.
    pub fn new(
        config: &Config,
        namesrv: Arc<NameServer>,
        meta: Arc<Meta>,
        leases: Table,
        sessions: Table,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                namesrv,
                meta,
                leases,
                sessions,
                in_use: InUse::default(),
                max_per_first_level: config.quotas.wildcards_per_first_level,
                register: config.subscriptions.unregistered == UnregisteredWildcards::Register,
                prune_after: Duration::from_secs(config.subscriptions.prune_wildcards_after_secs),
                pruned: AtomicU64::new(0),
                list_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Notes one more live subscription reading `filter`, until the result is dropped.
    pub fn hold(&self, filter: &str) -> Held {
        self.inner.in_use.hold(filter)
    }

    /// Wildcard registrations this bridge pruned so far.
    pub fn pruned(&self) -> u64 {
        self.inner.pruned.load(Ordering::Relaxed)
    }

    /// Registers a wildcard filter in kvconfig and in this bridge's meta at once. A filter
    /// this adds to the list gets a lease first; one listed already keeps what it had.
    /// Returns whether it added the filter (other servers may not have seen it yet).
    pub async fn register(&self, filter: &str) -> Result<bool, Error> {
        let this = &self.inner;
        let first = crate::lmq::first_topic(filter);
        lmq::check_wildcard(filter, &[first.to_owned()]).map_err(Error::Invalid)?;
        let _serialized = this.list_lock.lock().await;
        let mut added = false;
        for _ in 0..REGISTER_ATTEMPTS {
            let mut list = self.list(first).await?;
            if list.iter().any(|f| f == filter) {
                break;
            }
            if !added {
                let max = this.max_per_first_level;
                if max != 0 && list.len() >= max {
                    return Err(Error::QuotaExceeded(
                        "wildcards",
                        crate::error::Quota::Entries,
                    ));
                }
                // Without its lease the filter is pinned: never pruned, which is safe. A
                // subscription is not refused for that (e.g. `init` not re-run after an
                // upgrade that added the lease table).
                if let Err(e) = write_lease(&this.leases, filter, sessions::now_ms()).await {
                    warn!(filter, error = %e, "wildcard lease not written; the filter stays registered for good");
                }
            }
            added = true;
            list.push(filter.to_owned());
            // A name server that is down gets it by read repair when it is back.
            let _ = this
                .namesrv
                .put_kv_config(kvconfig::NAMESPACE, first, &list.join(","))
                .await?;
        }
        this.meta.add_wildcard(filter);
        Ok(added)
    }

    /// The kvconfig list of wildcards of first-level topic `first`, merged over every
    /// name server.
    async fn list(&self, first: &str) -> Result<Vec<String>, Error> {
        Ok(
            match self
                .inner
                .namesrv
                .get_kv_config(kvconfig::NAMESPACE, first, KvMerge::Lists)
                .await?
            {
                Some(v) => kvconfig::split_list(&v),
                None => Vec::new(),
            },
        )
    }

    /// Takes `filter` out of its first-level topic's kvconfig list (if listed), then
    /// deletes its lease.
    async fn prune(&self, filter: &str) -> Result<(), Error> {
        let this = &self.inner;
        let ns = &this.namesrv;
        let first = crate::lmq::first_topic(filter);
        let _serialized = this.list_lock.lock().await;
        {
            let mut list = self.list(first).await?;
            let before = list.len();
            list.retain(|f| f != filter);
            if list.len() != before
                && ns
                    .put_kv_config(kvconfig::NAMESPACE, first, &list.join(","))
                    .await?
                    == Written::Partly
            {
                // A name server that is down still lists it and would bring it back by
                // read repair: keep the lease, so that it is pruned again then.
                return Err(Error::Invalid(format!(
                    "{filter:?} not pruned everywhere: a name server is down"
                )));
            }
        }
        this.meta.remove_wildcard(filter);
        this.leases.delete(filter).await
    }

    /// One pass: renews this bridge's leases, registers again what its live subscriptions
    /// read but the list lost, and prunes what is due. Returns the filters pruned.
    pub async fn pass(&self) -> Result<Vec<String>, Error> {
        let this = &self.inner;
        let renew = renew_period(this.prune_after);
        let now = sessions::now_ms();
        let live: HashSet<String> = this.in_use.filters().into_iter().collect();
        for filter in &live {
            let first = crate::lmq::first_topic(filter);
            let listed = this.meta.wildcards(first).iter().any(|w| w == filter);
            if !listed && this.register {
                warn!(
                    filter,
                    "a wildcard read by live subscriptions left the kvconfig list; registering it again"
                );
                let _ = self.register(filter).await?;
                continue;
            }
            let half = u64::try_from(renew.as_millis() / 2).unwrap_or(u64::MAX);
            if lease(&this.leases, filter)
                .is_some_and(|l| now.saturating_sub(l.last_used_ms) >= half)
            {
                write_lease(&this.leases, filter, now).await?;
            }
        }
        // Read what every bridge wrote before judging: a lease renewed elsewhere a moment
        // ago, or a session stored there, keeps its filter.
        this.leases.sync(SYNC_WAIT).await?;
        this.sessions.sync(SYNC_WAIT).await?;
        let mut in_use = stored_filters(&this.sessions, now, &this.meta.first_topics());
        if this.register {
            // A stored session's LMQ must keep filling while its client is away: a
            // registration another writer dropped is made again.
            for filter in in_use.difference(&live) {
                let first = crate::lmq::first_topic(filter);
                if this.meta.wildcards(first).iter().any(|w| w == filter) {
                    continue;
                }
                match self.register(filter).await {
                    Ok(true) => warn!(
                        filter,
                        "a wildcard read by a stored session was not listed; registered it again"
                    ),
                    Ok(false) => {}
                    // E.g. its first-level topic left the configuration: the others go on.
                    Err(e) => {
                        warn!(filter, error = %e, "a stored session's wildcard not registered")
                    }
                }
            }
        }
        if this.prune_after.is_zero() {
            return Ok(Vec::new());
        }
        in_use.extend(live);
        let leases: Vec<(String, Lease)> = this
            .leases
            .select(|_| true)
            .into_iter()
            .filter_map(|(f, e)| Some((f, serde_json::from_slice(&e.value).ok()?)))
            .collect();
        let mut pruned = Vec::new();
        for filter in due(&leases, &in_use, now, this.prune_after) {
            self.prune(&filter).await?;
            this.pruned.fetch_add(1, Ordering::Relaxed);
            info!(filter = %filter, unused_for = ?this.prune_after, "wildcard registration pruned");
            pruned.push(filter);
        }
        Ok(pruned)
    }

    /// Runs [`Wildcards::pass`] every [`renew_period`] until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let period = renew_period(self.inner.prune_after);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.pass().await {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "wildcard leases not renewed or pruned; retrying");
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
    fn renew_period_is_a_quarter_within_bounds() {
        assert_eq!(
            renew_period(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            renew_period(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(renew_period(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(renew_period(Duration::ZERO), Duration::from_secs(3600));
    }

    #[test]
    fn only_unused_leases_older_than_the_period_are_due() {
        let lease = |f: &str, at| (f.to_owned(), Lease { last_used_ms: at });
        let leases = [
            lease("t/old/+", 1_000),
            lease("t/recent/+", 9_500),
            lease("t/held/+", 1_000),
        ];
        let in_use: HashSet<String> = ["t/held/+".to_owned()].into();
        assert_eq!(
            due(&leases, &in_use, 10_000, Duration::from_secs(5)),
            vec!["t/old/+"]
        );
        assert!(due(&leases, &HashSet::new(), 10_000, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn held_filters_are_counted_and_released() {
        let in_use = InUse::default();
        let a = in_use.hold("t/+");
        let b = in_use.hold("t/+");
        assert_eq!(in_use.filters(), vec!["t/+"]);
        drop(a);
        assert_eq!(in_use.filters(), vec!["t/+"]);
        drop(b);
        assert!(in_use.filters().is_empty());
    }
}
