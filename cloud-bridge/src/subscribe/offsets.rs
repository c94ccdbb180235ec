//! What a session handed to its client and what it may commit, per queue.
//!
//! A queue is one LMQ on one broker. Every delivery gets a tag that names its queue and its
//! LMQ offset; the offset a session commits for a queue (`UPDATE_CONSUMER_OFFSET`, group
//! `%LMQ%{clientId}`, queue 0, value = the next offset to read) is the smallest offset still
//! unacknowledged, or the pull position when none is. So a resumed session, on any bridge,
//! starts exactly after the last acknowledged message, and what it redelivers is at most
//! what was in flight (plus what was acknowledged during the last commit round trip).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One LMQ on one broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// LMQ name.
    pub lmq: Arc<str>,
    /// Broker address.
    pub broker: Arc<str>,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: BTreeSet<i64>,
    position: i64,
    /// One past the last offset handed to the client.
    handed_to: i64,
    committed: i64,
    removed: bool,
}

impl QueueState {
    fn commit_point(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.position)
    }
}

/// Delivery bookkeeping of one session.
#[derive(Debug, Default)]
pub struct Tracker {
    queues: HashMap<QueueKey, QueueState>,
    tags: HashMap<u64, (QueueKey, i64)>,
    next_tag: u64,
}

impl Tracker {
    /// Starts tracking a queue read from `offset` (already committed, or the start point).
    pub fn start(&mut self, key: QueueKey, offset: i64) {
        self.queues.insert(
            key,
            QueueState {
                position: offset,
                handed_to: offset,
                committed: offset,
                ..QueueState::default()
            },
        );
    }

    /// Stops tracking a queue (unsubscribed); its pending tags are forgotten.
    pub fn stop(&mut self, key: &QueueKey) {
        if let Some(q) = self.queues.get_mut(key) {
            q.removed = true;
            q.pending.clear();
        }
        self.tags.retain(|_, (k, _)| k != key);
    }

    /// A message at `offset` was handed to the client; `next` is the offset after it.
    pub fn handed(&mut self, key: &QueueKey, offset: i64, next: i64) -> u64 {
        if let Some(q) = self.queues.get_mut(key) {
            q.pending.insert(offset);
            q.position = q.position.max(next);
            q.handed_to = q.handed_to.max(offset + 1);
        }
        self.next_tag = self.next_tag.wrapping_add(1);
        self.tags.insert(self.next_tag, (key.clone(), offset));
        self.next_tag
    }

    /// Messages up to `next` were read and need no acknowledgement (filtered, duplicate,
    /// or nothing new).
    pub fn skipped(&mut self, key: &QueueKey, next: i64) {
        if let Some(q) = self.queues.get_mut(key) {
            q.position = q.position.max(next);
        }
    }

    /// The client acknowledged a delivery.
    pub fn acked(&mut self, tag: u64) {
        if let Some((key, offset)) = self.tags.remove(&tag)
            && let Some(q) = self.queues.get_mut(&key)
        {
            q.pending.remove(&offset);
        }
    }

    /// Queues whose commit point moved since the last call, with that point.
    pub fn to_commit(&mut self) -> Vec<(QueueKey, i64)> {
        let mut out = Vec::new();
        self.queues.retain(|key, q| {
            let point = q.commit_point();
            if point > q.committed {
                q.committed = point;
                out.push((key.clone(), point));
            }
            !q.removed
        });
        out
    }

    /// Per queue, one past the last offset handed to the client: what a resumed session
    /// redelivers below it goes out with DUP.
    pub fn handed_marks(&self) -> Vec<(QueueKey, i64)> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.removed)
            .map(|(k, q)| (k.clone(), q.handed_to))
            .collect()
    }

    /// The first unacknowledged offset of every queue that has one.
    pub fn unacked_heads(&self) -> Vec<(QueueKey, i64)> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.removed)
            .filter_map(|(k, q)| q.pending.first().map(|o| (k.clone(), *o)))
            .collect()
    }

    /// Gives up on the delivery at `offset` (moved to the retry queue): it no longer holds
    /// the commit point back.
    pub fn release(&mut self, key: &QueueKey, offset: i64) {
        if let Some(q) = self.queues.get_mut(key) {
            q.pending.remove(&offset);
        }
        self.tags.retain(|_, (k, o)| !(k == key && *o == offset));
    }

    /// Deliveries handed but not acknowledged.
    pub fn in_flight(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(l: &str) -> QueueKey {
        QueueKey {
            lmq: l.into(),
            broker: "b".into(),
        }
    }

    #[test]
    fn commit_point_is_the_first_unacknowledged_offset() {
        let mut t = Tracker::default();
        let k = key("%LMQ%t1%a%");
        t.start(k.clone(), 10);
        let a = t.handed(&k, 10, 11);
        let b = t.handed(&k, 11, 12);
        let c = t.handed(&k, 12, 13);
        assert!(t.to_commit().is_empty());
        t.acked(b);
        assert!(t.to_commit().is_empty(), "10 is still unacknowledged");
        t.acked(a);
        assert_eq!(t.to_commit(), vec![(k.clone(), 12)]);
        t.acked(c);
        t.skipped(&k, 20);
        assert_eq!(t.to_commit(), vec![(k.clone(), 20)]);
        assert!(t.to_commit().is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn stopped_queues_are_forgotten() {
        let mut t = Tracker::default();
        let k = key("q");
        t.start(k.clone(), 0);
        let a = t.handed(&k, 0, 1);
        t.stop(&k);
        t.acked(a);
        assert_eq!(t.in_flight(), 0);
        let _ = t.to_commit();
        assert!(t.to_commit().is_empty());
    }
}
