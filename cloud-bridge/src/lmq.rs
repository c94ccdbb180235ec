//! The rocketmq-mqtt naming of queues: MQTT topic -> first-level topic, queue name, LMQ name,
//! and the list of LMQs a publish is dispatched into (`INNER_MULTI_DISPATCH`). Every rule
//! here is the one of Apache rocketmq-mqtt (commit 6847f21), named after its Java method:
//!
//! - queue name (`TopicUtils.normalizeTopic`): the topic with a `/` appended when it
//!   contains a `/` and does not end with one (`t1/a/b` -> `t1/a/b/`, `t1/a/` stays, `t1`
//!   stays): so `t1/a` and `t1/a/` share one queue;
//! - LMQ name (`LmqQueueStoreManager.putMessage`): `%LMQ%` + the queue name with every `/`
//!   replaced by `%` (`t1/a/b` -> `%LMQ%t1%a%b%`, `/t1/a` -> `%LMQ%%t1%a%`, filter `t1/+`
//!   -> `%LMQ%t1%+%`);
//! - first-level topic, the RocketMQ topic a message is sent to (`TopicUtils.decode`): the
//!   topic without one leading `/`, up to the next `/` (`/t1/a` -> `t1`);
//! - point to point (`WildcardManager.matchQueueSetByMsgTopic`, `TopicUtils.getP2Peer`): a
//!   topic whose second level is `p2p` goes only to `%LMQ%%p2p%{peer}%`, peer = the third
//!   level; with no third level rocketmq-mqtt fails the publish, so the bridge refuses it;
//! - wildcards a publish is dispatched to (`Trie.getNodePath`): the registered filters
//!   that match the queue name split on `/` the Java way (trailing empty levels dropped),
//!   so `t1/+` matches `t1/a/`; the bridge also dispatches to the filters that match by the
//!   MQTT rules (`t1/a/+` matches `t1/a/`), and its readers deliver a message only to
//!   subscriptions whose filter matches its topic by the MQTT rules (two topics can share a
//!   queue);
//! - a session's retry queue is `%LMQ%%retry%{clientId}%` (`TopicUtils.getRetryTopic`).
//!
//! Nothing is escaped by rocketmq-mqtt, so names that RocketMQ would misread are refused
//! before they get here (`mqtt::cloud_topic`: no `,` `%` or control characters, at most
//! 249 bytes); wildcards read from kvconfig that break those rules are ignored
//! (`meta/kvconfig.rs`).

/// Prefix of every light message queue.
pub const LMQ_PREFIX: &str = "%LMQ%";

/// Second level marking a point-to-point topic.
pub const P2P_LEVEL: &str = "p2p";

/// The queue name of a topic or filter (`TopicUtils.normalizeTopic`).
pub fn queue_name(topic: &str) -> String {
    if topic.contains('/') && !topic.ends_with('/') {
        format!("{topic}/")
    } else {
        topic.to_owned()
    }
}

/// The LMQ name of a topic or filter.
pub fn lmq_name(topic: &str) -> String {
    format!("{LMQ_PREFIX}{}", queue_name(topic).replace('/', "%"))
}

/// The first-level topic of a topic or filter: the RocketMQ topic its messages are sent to,
/// and the kvconfig key its wildcards are listed under (`TopicUtils.decode`: one leading
/// `/` is dropped, then up to the next `/`).
pub fn first_topic(topic: &str) -> &str {
    let rest = topic.strip_prefix('/').unwrap_or(topic);
    // Java: indexOf("/", 1): a `/` right at the start of `rest` does not end the level.
    let mut chars = rest.char_indices();
    let _ = chars.next();
    match chars.find(|(_, c)| *c == '/') {
        Some((i, _)) => &rest[..i],
        None => rest,
    }
}

/// The p2p queue of a client.
pub fn p2p_lmq(client_id: &str) -> String {
    format!("{LMQ_PREFIX}%{P2P_LEVEL}%{client_id}%")
}

/// The retry queue of a client.
pub fn retry_lmq(client_id: &str) -> String {
    format!("{LMQ_PREFIX}%retry%{client_id}%")
}

/// What a topic is to rocketmq-mqtt's point-to-point rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P2p<'a> {
    /// An ordinary topic.
    No,
    /// A point-to-point topic for this client.
    Peer(&'a str),
    /// A point-to-point topic without a client (`t1/p2p`, `t1/p2p/`, `t1/p2p//x`):
    /// rocketmq-mqtt fails such a publish.
    NoPeer,
}

/// The p2p reading of a topic (`TopicUtils.isP2P` on the normalized second level, then
/// `TopicUtils.getP2Peer`: the third level).
pub fn p2p(topic: &str) -> P2p<'_> {
    let rest = topic.strip_prefix('/').unwrap_or(topic);
    let first = first_topic(topic);
    // The second level onwards, normalized to `/.../` as `normalizeSecondTopic` does.
    let second = &rest[first.len()..];
    let Some(after) = second.strip_prefix("/p2p") else {
        return P2p::No;
    };
    // `isP2P`: the normalized second topic starts with `/p2p/` (`t1/p2p` normalizes to
    // `/p2p/` too).
    if !(after.is_empty() || after.starts_with('/')) {
        return P2p::No;
    }
    match after.split('/').nth(1) {
        Some(peer) if !peer.is_empty() => P2p::Peer(peer),
        _ => P2p::NoPeer,
    }
}

/// The receiving client of a point-to-point topic, if it is one with a client.
pub fn p2p_peer(topic: &str) -> Option<&str> {
    match p2p(topic) {
        P2p::Peer(peer) => Some(peer),
        P2p::No | P2p::NoPeer => None,
    }
}

/// The levels of a queue name as Java's `String.split("/")` gives them: trailing empty
/// levels are dropped (`t1/a/` -> `t1`, `a`).
fn java_levels(name: &str) -> Vec<&str> {
    let mut levels: Vec<&str> = name.split('/').collect();
    while levels.last() == Some(&"") {
        levels.pop();
    }
    levels
}

/// Whether rocketmq-mqtt dispatches a publish to `topic` into the queue of the registered
/// wildcard `filter` (`Trie.getNodePath` with `filter` as the only node; both normalized
/// as rocketmq-mqtt does: `MetaPersistManagerSample` normalizes kvconfig wildcards,
/// `PublishProcessor` the topic).
pub fn rocketmq_mqtt_matches(filter: &str, topic: &str) -> bool {
    fn walk(f: &[&str], t: &[&str], after_hash: bool) -> bool {
        match f.split_first() {
            // The end of the filter: a node with a value; a match when the topic ends here
            // too, or the node was reached through `#`.
            None => t.is_empty() || after_hash,
            Some((&"#", rest)) => walk(rest, t.get(1..).unwrap_or(&[]), true),
            Some((&"+", rest)) => !t.is_empty() && walk(rest, &t[1..], false),
            Some((level, rest)) => t.first() == Some(level) && walk(rest, &t[1..], false),
        }
    }
    let f = queue_name(filter);
    let t = queue_name(topic);
    walk(&java_levels(&f), &java_levels(&t), false)
}

/// The LMQs one publish to `topic` goes into: its own (or the p2p peer's) plus every
/// matching wildcard filter of its first-level topic, each once. `None` for a p2p topic
/// without a client.
pub fn dispatch_queues(topic: &str, wildcards: &[String]) -> Option<Vec<String>> {
    match p2p(topic) {
        P2p::Peer(peer) => return Some(vec![p2p_lmq(peer)]),
        P2p::NoPeer => return None,
        P2p::No => {}
    }
    let mut queues = Vec::with_capacity(1 + wildcards.len());
    queues.push(lmq_name(topic));
    for w in wildcards {
        if mqtt::topic::matches(w, topic) || rocketmq_mqtt_matches(w, topic) {
            let name = lmq_name(w);
            if !queues.contains(&name) {
                queues.push(name);
            }
        }
    }
    Some(queues)
}

/// Why rocketmq-mqtt cannot serve a wildcard filter, if it cannot: one that ends in an
/// empty level after its normalized form (`t1/+//`) is read from `%LMQ%t1%+%%` but
/// dispatched to `%LMQ%t1%+%` (`Trie.getNodePath` drops trailing empty levels).
pub fn unservable_wildcard(filter: &str) -> Option<String> {
    (mqtt::topic::is_wildcard(filter) && filter.ends_with("//")).then(|| {
        format!(
            "{filter:?} ends in an empty level: rocketmq-mqtt reads it from {} but \
             dispatches to the queue without it",
            lmq_name(filter)
        )
    })
}

/// Checks a wildcard filter for registration under one of `first_levels`.
pub fn check_wildcard(filter: &str, first_levels: &[String]) -> Result<(), String> {
    mqtt::topic::validate_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    if !mqtt::topic::is_wildcard(filter) {
        return Err(format!("{filter:?} has no wildcard"));
    }
    mqtt::cloud_topic::check_topic(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    if let Some(why) = unservable_wildcard(filter) {
        return Err(why);
    }
    let first = first_topic(filter);
    if !first_levels.iter().any(|f| f == first) {
        return Err(format!(
            "{filter:?} is not under a configured first-level topic"
        ));
    }
    Ok(())
}

/// Whether a filter spans first-level topics: its first level (after one leading `/`, as
/// [`first_topic`] reads it) is a wildcard (`#`, `+/C`, `/#`, `/+/x`). rocketmq-mqtt
/// cannot serve such a filter: its wildcard queues live under one first-level topic.
pub fn spans_first_topics(filter: &str) -> bool {
    mqtt::topic::is_wildcard(first_topic(filter))
}

/// The filters under first-level topic `first` whose union is what `filter` (one that
/// [`spans_first_topics`]) matches among the topics of `first`: the topics `first/...`
/// and `/first/...` (both belong to `first`, see [`first_topic`]). Each part is an exact
/// topic (read from its own LMQ) or a wildcard filter under `first` (read from its
/// registered LMQ). Empty when `filter` matches nothing there, or `first` starts with `$`
/// (a filter starting with a wildcard never matches such topics, 4.7.2-1).
pub fn parts_under(filter: &str, first: &str) -> Vec<String> {
    if first.is_empty() || first.starts_with('$') || mqtt::topic::is_wildcard(first) {
        return Vec::new();
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let join = |head: &[&str], rest: &[&str]| -> String {
        head.iter()
            .chain(rest)
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut parts = Vec::new();
    // Topics `first/...`: level 0 is `first`.
    match levels[0] {
        "#" => parts.push(format!("{first}/#")),
        "+" => parts.push(join(&[first], &levels[1..])),
        _ => {}
    }
    // Topics `/first/...`: level 0 is empty, level 1 is `first`.
    if matches!(levels[0], "#") {
        parts.push(format!("/{first}/#"));
    } else if matches!(levels[0], "+" | "") {
        match levels.get(1) {
            Some(&"#") => parts.push(format!("/{first}/#")),
            Some(&l) if l == "+" || l == first => {
                parts.push(join(&["", first], levels.get(2..).unwrap_or(&[])));
            }
            _ => {}
        }
    }
    parts.dedup();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every topic shape against the names rocketmq-mqtt 6847f21 gives it, as printed by
    /// its own code (`TopicUtils.normalizeTopic` for the queue, `"%LMQ%" +
    /// queue.replace("/", "%")` as in `LmqQueueStoreManager.putMessage` for the LMQ,
    /// `TopicUtils.decode(queue).getFirstTopic()` for the RocketMQ topic,
    /// `TopicUtils.getP2Peer` for p2p; `tests/peers/Names.java` prints this table and the
    /// interop suite compares it with these functions).
    #[test]
    fn names_follow_rocketmq_mqtt() {
        // topic, queue name, LMQ, first-level topic
        let table = [
            ("t1", "t1", "%LMQ%t1", "t1"),
            ("t1/", "t1/", "%LMQ%t1%", "t1"),
            ("t1/a", "t1/a/", "%LMQ%t1%a%", "t1"),
            ("t1/a/", "t1/a/", "%LMQ%t1%a%", "t1"),
            ("/t1/a", "/t1/a/", "%LMQ%%t1%a%", "t1"),
            ("/t1/a/", "/t1/a/", "%LMQ%%t1%a%", "t1"),
            ("t1//a", "t1//a/", "%LMQ%t1%%a%", "t1"),
            ("t1/a//", "t1/a//", "%LMQ%t1%a%%", "t1"),
            ("t1//", "t1//", "%LMQ%t1%%", "t1"),
            ("/t1", "/t1/", "%LMQ%%t1%", "t1"),
            ("t1/a/b", "t1/a/b/", "%LMQ%t1%a%b%", "t1"),
            ("t1/+", "t1/+/", "%LMQ%t1%+%", "t1"),
            ("t1/+/", "t1/+/", "%LMQ%t1%+%", "t1"),
            ("t1/#", "t1/#/", "%LMQ%t1%#%", "t1"),
            ("t1//+", "t1//+/", "%LMQ%t1%%+%", "t1"),
            ("/t1/+", "/t1/+/", "%LMQ%%t1%+%", "t1"),
            ("t1/+/+", "t1/+/+/", "%LMQ%t1%+%+%", "t1"),
        ];
        for (topic, queue, lmq, first) in table {
            assert_eq!(queue_name(topic), queue, "queue of {topic:?}");
            assert_eq!(lmq_name(topic), lmq, "LMQ of {topic:?}");
            assert_eq!(first_topic(topic), first, "first-level topic of {topic:?}");
        }
        assert_eq!(p2p_lmq("c1"), "%LMQ%%p2p%c1%");
        assert_eq!(retry_lmq("c1"), "%LMQ%%retry%c1%");
    }

    /// `TopicUtils.getP2Peer` on the normalized topic; `t1/p2p` and `t1/p2p/` make it
    /// throw (ArrayIndexOutOfBounds), so the bridge refuses them.
    #[test]
    fn p2p_follows_rocketmq_mqtt() {
        assert_eq!(p2p("t1/p2p/c1"), P2p::Peer("c1"));
        assert_eq!(p2p("t1/p2p/c1/x"), P2p::Peer("c1"));
        assert_eq!(p2p("/t1/p2p/c1"), P2p::Peer("c1"));
        assert_eq!(p2p("t1/p2p"), P2p::NoPeer);
        assert_eq!(p2p("t1/p2p/"), P2p::NoPeer);
        assert_eq!(p2p("t1/p2p//x"), P2p::NoPeer);
        assert_eq!(p2p("t1/p2px/c1"), P2p::No);
        assert_eq!(p2p("t1/a/p2p/c1"), P2p::No);
        assert_eq!(p2p("t1"), P2p::No);
        assert_eq!(dispatch_queues("t1/p2p/", &[]), None);
    }

    /// Which registered wildcards rocketmq-mqtt dispatches a topic to (`Trie.getNodePath`
    /// after `TopicUtils.normalizeTopic` of both, as printed by `tests/peers/Names.java`).
    #[test]
    fn wildcard_matching_follows_rocketmq_mqtt() {
        let topics = [
            "t1", "t1/", "t1/a", "t1/a/", "t1//", "t1//a", "t1/a/b", "t1/a//", "/t1/a", "t1//b",
            "t1/a/b/",
        ];
        // filter, the topics above it matches in rocketmq-mqtt
        let table: [(&str, &[&str]); 10] = [
            ("t1/+", &["t1/a", "t1/a/", "t1/a//"]),
            ("t1/+/", &["t1/a", "t1/a/", "t1/a//"]),
            (
                "t1/#",
                &[
                    "t1", "t1/", "t1/a", "t1/a/", "t1//", "t1//a", "t1/a/b", "t1/a//", "t1//b",
                    "t1/a/b/",
                ],
            ),
            ("t1/a/+", &["t1/a/b", "t1/a/b/"]),
            ("t1/+/b", &["t1/a/b", "t1//b", "t1/a/b/"]),
            ("t1//+", &["t1//a", "t1//b"]),
            ("t1/+//", &["t1/a", "t1/a/", "t1/a//"]),
            ("t1/a/#", &["t1/a", "t1/a/", "t1/a/b", "t1/a//", "t1/a/b/"]),
            ("/t1/+", &["/t1/a"]),
            ("t1/+/+", &["t1//a", "t1/a/b", "t1//b", "t1/a/b/"]),
        ];
        for (filter, matched) in table {
            for topic in topics {
                assert_eq!(
                    rocketmq_mqtt_matches(filter, topic),
                    matched.contains(&topic),
                    "{filter:?} on {topic:?}"
                );
            }
        }
    }

    #[test]
    fn dispatch_includes_matching_wildcards_only() {
        let w = vec![
            "t1/+".to_string(),
            "t1/a/#".to_string(),
            "t1/b/+".to_string(),
            "t1/+/".to_string(),
            "t1/a/+".to_string(),
        ];
        let q = |t: &str| dispatch_queues(t, &w).unwrap_or_default();
        assert_eq!(q("t1/a"), vec!["%LMQ%t1%a%", "%LMQ%t1%+%", "%LMQ%t1%a%#%"]);
        assert_eq!(q("t1/c/d"), vec!["%LMQ%t1%c%d%"]);
        assert_eq!(q("t1/p2p/dev9"), vec!["%LMQ%%p2p%dev9%"]);
        // `t1/a/`: rocketmq-mqtt's `t1/+` (its queue, once for `t1/+` and `t1/+/`) and
        // `t1/a/#`, and MQTT's `t1/a/+`.
        assert_eq!(
            q("t1/a/"),
            vec!["%LMQ%t1%a%", "%LMQ%t1%+%", "%LMQ%t1%a%#%", "%LMQ%t1%a%+%"]
        );
    }

    #[test]
    fn wildcard_checks() {
        let f = vec!["t1".to_string()];
        assert!(check_wildcard("t1/+", &f).is_ok());
        assert!(check_wildcard("t1/a", &f).is_err());
        assert!(check_wildcard("t2/+", &f).is_err());
        assert!(check_wildcard("t1/a#", &f).is_err());
        assert!(check_wildcard("t1/a,b/+", &f).is_err());
        assert!(check_wildcard("t1/a%/+", &f).is_err());
        assert!(check_wildcard(&format!("t1/{}/+", "a".repeat(250)), &f).is_err());
        assert!(
            check_wildcard("t1/+//", &f).is_err(),
            "rocketmq-mqtt cannot serve it"
        );
        assert!(check_wildcard("/t1/+", &f).is_ok(), "first-level topic t1");
    }

    /// A filter spanning first-level topics is the union of its parts under each one;
    /// every topic it matches belongs to exactly the parts that match it.
    #[test]
    fn parts_of_filters_across_first_level_topics() {
        assert!(spans_first_topics("#"));
        assert!(spans_first_topics("+/C"));
        assert!(spans_first_topics("/#"));
        assert!(spans_first_topics("/+"));
        assert!(!spans_first_topics("/TopicA"));
        assert!(!spans_first_topics("t1/#"));
        assert_eq!(parts_under("#", "t1"), vec!["t1/#", "/t1/#"]);
        assert_eq!(parts_under("+", "t1"), vec!["t1"]);
        assert_eq!(parts_under("+/C", "t1"), vec!["t1/C"]);
        assert_eq!(parts_under("+/+", "t1"), vec!["t1/+", "/t1"]);
        assert_eq!(parts_under("+/#", "t1"), vec!["t1/#", "/t1/#"]);
        assert_eq!(parts_under("+/t1/x", "t1"), vec!["t1/t1/x", "/t1/x"]);
        assert_eq!(parts_under("+/t2/x", "t1"), vec!["t1/t2/x"]);
        assert!(parts_under("/t2/#", "t1").is_empty());
        assert_eq!(parts_under("/#", "t1"), vec!["/t1/#"]);
        assert_eq!(parts_under("/+", "t1"), vec!["/t1"]);
        assert_eq!(parts_under("/+/+", "t1"), vec!["/t1/+"]);
        assert!(parts_under("#", "$SYS").is_empty());
        // Exhaustive check on sample topics: a topic of `t1` is matched by the filter iff
        // one of its parts matches it.
        let filters = [
            "#", "+", "+/C", "+/+", "+/#", "/#", "/+", "/+/C", "+/+/C", "+/t1/#",
        ];
        let topics = [
            "t1", "t1/C", "t1/a", "t1/a/C", "/t1", "/t1/C", "/t1/a/C", "t1/", "/t1/", "t1//C",
        ];
        for f in filters {
            let parts = parts_under(f, "t1");
            for t in topics {
                assert_eq!(first_topic(t), "t1");
                assert_eq!(
                    mqtt::topic::matches(f, t),
                    parts.iter().any(|p| mqtt::topic::matches(p, t)),
                    "{f:?} on {t:?} (parts {parts:?})"
                );
            }
        }
    }
}
