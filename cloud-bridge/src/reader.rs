//! Reading one LMQ on one broker for one session: long-polling pulls
//! (`PULL_MESSAGE`, group `CID_RMQ_SYS_LMQ_PULL`, queue 0), in queue order, handing each
//! message to the session's bounded delivery channel.
//!
//! - Back-pressure: when the channel is full the reader waits; it pulls no further, so
//!   memory stays bounded and the offsets simply lag.
//! - Identity: a message's offset in this LMQ comes from `INNER_MULTI_QUEUE_OFFSET` (the
//!   pulled message's own queue offset is the first-level topic's). Duplicates across
//!   overlapping subscriptions are dropped by the message's real identity (`UNIQ_KEY`,
//!   else the broker's offset message id), never by queue offset alone.
//! - An LMQ that never received a message answers "no new message" (or code 17 on some
//!   brokers): that is an empty queue, not an error.
//! - Routing: a subscription queue's reader hands a message over only when one of the
//!   session's subscriptions ([`SubTable`]) matches its topic by the MQTT rules
//!   (rocketmq-mqtt's naming puts `t1/a` and `t1/a/` in one queue, and dispatches `t1/a/`
//!   to the queue of `t1/+`, `lmq.rs`), leaving out No Local subscriptions when the
//!   session published it. One LMQ is read once per session however many subscriptions
//!   read it, and a message held by several LMQs (`t1/+` and `#`'s part `t1/#`) is one
//!   delivery: at the highest QoS granted to a matching subscription, with the
//!   identifiers of all of them (3.3.4-3/4), RETAIN as published when one of them asks
//!   for it, and dropped when it has expired (`mqtt5ExpiresAt`).
//! - Start: the offset committed for the session's group (`%LMQ%{clientId}`), by this
//!   bridge or by rocketmq-mqtt, is where a session that did not start clean reads from,
//!   whether or not the bridge has a session record; only without one does it start at
//!   the latest message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mqtt::broker::Delivery;
use mqtt::packet::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::lmq_message;
use crate::offsets::{QueueKey, Tracker};
use crate::rocketmq::{Client, PullRequest, PullResult};

/// How long one pull may be held by the broker.
pub const LONG_POLL: Duration = Duration::from_secs(15);
/// Messages per pull.
const BATCH: u32 = 32;
/// How many message ids a session remembers for de-duplication.
const SEEN_CAPACITY: usize = 16_384;

/// Recently delivered message ids of a session (bounded).
#[derive(Debug, Default)]
pub struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenIds {
    /// Records `id`; false when it was seen already.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

/// One subscription as the session's readers route by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 No Local: never the session's own publishes.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
    /// When the subscription was made, Unix ms (`None` for one stored before this was
    /// kept). A resumed reader whose broker has no committed offset for it starts at the
    /// first message stored since then, not at the latest: the broker may have lost the
    /// offset in a crash (it flushes them every few seconds), or joined the cluster later.
    pub since_ms: Option<u64>,
}

/// A session's subscriptions by filter.
pub type SubTable = HashMap<String, SubEntry>;

/// How one message goes to a session: the subscriptions of `subs` that take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The highest QoS granted by a matching subscription.
    pub qos: QoS,
    /// Whether RETAIN stays set (the message had it and a matching subscription has
    /// Retain As Published).
    pub retain: bool,
    /// The identifiers of the matching subscriptions, ascending, each once.
    pub ids: Vec<u32>,
}

/// Routes a message published by `publisher` with RETAIN `retain` on `topic` to the
/// session `client_id` with subscriptions `subs`; `None` when none takes it.
pub fn route(
    subs: &SubTable,
    client_id: &str,
    topic: &str,
    retain: bool,
    publisher: Option<&str>,
) -> Option<Routing> {
    let own = publisher == Some(client_id);
    let mut routing: Option<Routing> = None;
    for (filter, e) in subs {
        if (e.no_local && own) || !mqtt::topic::matches(filter, topic) {
            continue;
        }
        let r = routing.get_or_insert(Routing {
            qos: QoS::AtMostOnce,
            retain: false,
            ids: Vec::new(),
        });
        r.qos = r.qos.max(e.qos);
        r.retain |= retain && e.retain_as_published;
        r.ids.extend(e.id);
    }
    if let Some(r) = &mut routing {
        r.ids.sort_unstable();
        r.ids.dedup();
    }
    routing
}

/// What a reader shares with its session.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The session's client id (No Local).
    pub client_id: Arc<str>,
    /// The session's subscriptions.
    pub subs: Arc<Mutex<SubTable>>,
    /// RocketMQ client.
    pub client: Client,
    /// Delivery bookkeeping.
    pub tracker: Arc<Mutex<Tracker>>,
    /// De-duplication.
    pub seen: Arc<Mutex<SeenIds>>,
    /// The session's delivery channel.
    pub tx: mpsc::Sender<Delivery>,
}

/// Where a reader starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// At this offset; offsets below `dup_below` may have been in flight before a resume
    /// and go out with DUP.
    At {
        /// First offset.
        offset: i64,
        /// DUP below this.
        dup_below: i64,
    },
    /// Resolved by the reader itself (retrying while the broker is unreachable): the
    /// committed offset of `group` when there is one (unless the session started clean),
    /// else the latest message.
    Resolve {
        /// The session's offset group, for persistent sessions.
        group: Option<String>,
        /// Whether to use a committed offset (false after a clean start).
        use_committed: bool,
        /// In-flight window, for DUP marking after a resume.
        window: i64,
        /// How far the last connection handed this queue out, when it ended cleanly:
        /// exact DUP marking instead of the window estimate.
        handed_to: Option<i64>,
        /// When a resumed subscription reading this queue was made: without a committed
        /// offset, the start is the first message stored since.
        since_ms: Option<u64>,
    },
}

/// One reader's parameters.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The queue.
    pub key: QueueKey,
    /// Where to start.
    pub start: Start,
    /// The implicit p2p and retry queues take every message (at most at QoS 2, never
    /// retained); the others are routed by the session's subscriptions ([`route`]).
    pub implicit: bool,
    /// Stops the reader.
    pub cancel: CancellationToken,
}

/// Finds where a session reads `key` from: the offset committed for `group` whenever
/// there is one (by this bridge or by rocketmq-mqtt, with or without a bridge session
/// record) and `use_committed` (false after a clean start, which discards it); else, with
/// `since_ms` (a resumed subscription, or a broker that joined the route of a live one),
/// the first message stored since then (the broker lost the offset, or is new to the
/// route); else the latest message. A
/// persistent session's start is committed at once, so a crash before
/// the first acknowledgement resumes there. Returns the offset and whether it was a
/// committed one.
pub async fn resolve_start(
    client: &Client,
    key: &QueueKey,
    group: Option<&str>,
    use_committed: bool,
    since_ms: Option<u64>,
) -> Result<(i64, bool), crate::Error> {
    let b = client.broker(&key.broker);
    let stored = match (group, use_committed) {
        (Some(g), true) => b.query_consumer_offset(g, &key.lmq, 0).await?,
        _ => None,
    };
    if let Some(o) = stored {
        return Ok((o, true));
    }
    let start = match since_ms {
        Some(since) => b.offset_at_time(&key.lmq, 0, since).await?,
        None => b.max_offset(&key.lmq, 0).await?,
    };
    if let Some(g) = group {
        b.update_consumer_offset(g, &key.lmq, 0, start).await?;
    }
    Ok((start, false))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reader {
    /// Pulls and hands messages over until cancelled or the session's channel closes.
    pub async fn run(mut self, shared: Shared) {
        let mut backoff = Duration::from_millis(100);
        let (mut offset, dup_below) = loop {
            match &self.start {
                Start::At { offset, dup_below } => break (*offset, *dup_below),
                Start::Resolve {
                    group,
                    use_committed,
                    window,
                    handed_to,
                    since_ms,
                } => {
                    match resolve_start(
                        &shared.client,
                        &self.key,
                        group.as_deref(),
                        *use_committed,
                        *since_ms,
                    )
                    .await
                    {
                        Ok((o, stored)) => {
                            lock(&shared.tracker).start(self.key.clone(), o);
                            let dup_below = match (stored, handed_to) {
                                (false, _) => o,
                                (true, Some(h)) => *h,
                                (true, None) => o + window,
                            };
                            break (o, dup_below);
                        }
                        Err(e) => {
                            debug!(lmq = %self.key.lmq, error = %e, "start offset not resolved yet");
                            if !self.pause(backoff).await {
                                return;
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        };
        self.start = Start::At { offset, dup_below };
        let mut failing = false;
        loop {
            let request = PullRequest::lmq(&self.key.lmq, offset, BATCH).long_poll(LONG_POLL);
            let broker = shared.client.broker(&self.key.broker);
            let result = tokio::select! {
                r = broker.pull(&request) => r,
                _ = self.cancel.cancelled() => return,
            };
            let next = match result {
                Ok(PullResult::Found {
                    messages,
                    next_offset,
                    ..
                }) => {
                    for m in messages {
                        let Some(at) = m.lmq_offset(&self.key.lmq) else {
                            continue;
                        };
                        if at < offset {
                            continue;
                        }
                        if !self.hand_over(&shared, &m, at).await {
                            return;
                        }
                    }
                    next_offset
                }
                Ok(
                    PullResult::NoNewMsg { next_offset } | PullResult::NoMatched { next_offset },
                ) => next_offset.max(offset),
                Ok(PullResult::OffsetIllegal { next_offset }) => {
                    warn!(lmq = %self.key.lmq, offset, next_offset, "offset out of the queue; moving on");
                    next_offset
                }
                Ok(PullResult::TopicNotExist) => {
                    self.pause(Duration::from_secs(1)).await;
                    offset
                }
                Err(e) => {
                    if !failing {
                        warn!(lmq = %self.key.lmq, broker = %self.key.broker, error = %e, "pull failed; retrying");
                        failing = true;
                    }
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if failing {
                debug!(lmq = %self.key.lmq, "pulling again");
            }
            failing = false;
            backoff = Duration::from_millis(100);
            offset = next;
            lock(&shared.tracker).skipped(&self.key, offset);
        }
    }

    /// Sleeps unless cancelled; false when cancelled.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Hands one message to the session; false when the session is gone.
    async fn hand_over(&self, shared: &Shared, m: &crate::rocketmq::Message, at: i64) -> bool {
        let now = mqtt::broker::now_ms();
        let routed = lmq_message::decode(m).and_then(|d| {
            if d.expires_ms.is_some_and(|e| e <= now) {
                return None;
            }
            let mut message = d.message;
            let routing = if self.implicit {
                Routing {
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    ids: Vec::new(),
                }
            } else {
                route(
                    &lock(&shared.subs),
                    &shared.client_id,
                    &message.topic,
                    message.retain,
                    d.publisher.as_deref(),
                )?
            };
            message.qos = message.qos.min(routing.qos);
            message.retain = routing.retain;
            Some((message, d.expires_ms, routing.ids))
        });
        // The same message read from another LMQ of the session was delivered already.
        let id = m.msg_id().map_or_else(|| m.offset_msg_id(), str::to_owned);
        let Some((message, expires_ms, subscription_ids)) =
            routed.filter(|_| lock(&shared.seen).insert(&id))
        else {
            lock(&shared.tracker).skipped(&self.key, at + 1);
            return true;
        };
        let tag = lock(&shared.tracker).handed(&self.key, at, at + 1);
        // DUP only on QoS 1/2 (2.1.2-4: a QoS 0 PUBLISH never has it).
        let dup = message.qos != QoS::AtMostOnce
            && matches!(self.start, Start::At { dup_below, .. } if at < dup_below);
        let delivery = Delivery {
            message: Box::new(message),
            dup,
            tag,
            expires_ms,
            share: None,
            subscription_ids,
        };
        tokio::select! {
            r = shared.tx.send(delivery) => r.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_takes_every_matching_subscription() {
        let e = |qos, no_local, retain_as_published, id| SubEntry {
            qos,
            no_local,
            retain_as_published,
            id,
            since_ms: None,
        };
        let subs: SubTable = [
            ("t1/+".to_owned(), e(QoS::AtMostOnce, false, false, Some(7))),
            ("#".to_owned(), e(QoS::ExactlyOnce, false, true, Some(3))),
            ("t1/a".to_owned(), e(QoS::AtLeastOnce, true, false, None)),
        ]
        .into();
        let r = route(&subs, "me", "t1/a", true, Some("other")).expect("routed");
        assert_eq!(r.qos, QoS::ExactlyOnce);
        assert!(r.retain);
        assert_eq!(r.ids, vec![3, 7]);
        // No Local drops only the subscription that asked for it.
        let only_no_local: SubTable =
            [("t1/a".to_owned(), e(QoS::AtLeastOnce, true, false, None))].into();
        assert_eq!(route(&only_no_local, "me", "t1/a", false, Some("me")), None);
        assert!(route(&only_no_local, "me", "t1/a", false, Some("you")).is_some());
        assert!(route(&subs, "me", "$SYS/x", false, None).is_none());
        let r = route(&subs, "me", "t1/b", true, None).expect("routed");
        assert_eq!((r.qos, r.retain), (QoS::ExactlyOnce, true));
    }

    #[test]
    fn seen_ids_are_bounded() {
        let mut s = SeenIds::default();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        for i in 0..SEEN_CAPACITY {
            s.insert(&i.to_string());
        }
        assert!(s.insert("a"), "the oldest id was forgotten");
        assert!(s.order.len() <= SEEN_CAPACITY);
    }
}
