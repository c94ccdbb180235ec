//! The rocketmq-mqtt naming of queues: MQTT topic -> first-level topic, queue name, LMQ name,
//! and the list of LMQs a publish is dispatched into (`INNER_MULTI_DISPATCH`).
//!
//! - first-level topic: the topic up to its first `/`;
//! - queue name: the topic with a trailing `/` when it contains a `/` (`t1/a/b` -> `t1/a/b/`);
//! - LMQ name: `%LMQ%` + the queue name with every `/` replaced by `%`
//!   (`t1/a/b` -> `%LMQ%t1%a%b%`, filter `t1/+` -> `%LMQ%t1%+%`);
//! - point to point: `{first}/p2p/{clientId}` goes only to `%LMQ%%p2p%{clientId}%`;
//! - a session's retry queue is `%LMQ%%retry%{clientId}%`.
//!
//! Nothing is escaped by rocketmq-mqtt, so names that RocketMQ would misread are refused
//! before they get here (`mqtt::cloud_topic`: no `,` `%` or control characters, at most
//! 249 bytes); wildcards read from kvconfig that break those rules are ignored (`meta.rs`).

/// Prefix of every light message queue.
pub const LMQ_PREFIX: &str = "%LMQ%";

/// Second level marking a point-to-point topic.
pub const P2P_LEVEL: &str = "p2p";

/// The queue name of a topic or filter.
pub fn queue_name(topic: &str) -> String {
    if topic.contains('/') {
        format!("{topic}/")
    } else {
        topic.to_owned()
    }
}

/// The LMQ name of a topic or filter.
pub fn lmq_name(topic: &str) -> String {
    format!("{LMQ_PREFIX}{}", queue_name(topic).replace('/', "%"))
}

/// The p2p queue of a client.
pub fn p2p_lmq(client_id: &str) -> String {
    format!("{LMQ_PREFIX}%{P2P_LEVEL}%{client_id}%")
}

/// The retry queue of a client.
pub fn retry_lmq(client_id: &str) -> String {
    format!("{LMQ_PREFIX}%retry%{client_id}%")
}

/// The receiving client of a point-to-point topic (`{first}/p2p/{clientId}`), if it is one.
pub fn p2p_peer(topic: &str) -> Option<&str> {
    let mut levels = topic.split('/');
    let _first = levels.next()?;
    if levels.next()? != P2P_LEVEL {
        return None;
    }
    levels.next().filter(|peer| !peer.is_empty())
}

/// The LMQs one publish to `topic` goes into: its own (or the p2p peer's) plus every
/// matching wildcard filter of its first-level topic.
pub fn dispatch_queues(topic: &str, wildcards: &[String]) -> Vec<String> {
    if let Some(peer) = p2p_peer(topic) {
        return vec![p2p_lmq(peer)];
    }
    let mut queues = Vec::with_capacity(1 + wildcards.len());
    queues.push(lmq_name(topic));
    for w in wildcards {
        if mqtt::topic::matches(w, topic) {
            queues.push(lmq_name(w));
        }
    }
    queues
}

/// Checks a wildcard filter for registration under one of `first_levels`.
pub fn check_wildcard(filter: &str, first_levels: &[String]) -> Result<(), String> {
    mqtt::topic::validate_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    if !mqtt::topic::is_wildcard(filter) {
        return Err(format!("{filter:?} has no wildcard"));
    }
    mqtt::cloud_topic::check_topic(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    let first = mqtt::topic::first_level(filter);
    if !first_levels.iter().any(|f| f == first) {
        return Err(format!(
            "{filter:?} is not under a configured first-level topic"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rocketmq_mqtt() {
        assert_eq!(lmq_name("t1/a/b"), "%LMQ%t1%a%b%");
        assert_eq!(lmq_name("t1"), "%LMQ%t1");
        assert_eq!(lmq_name("t1/+"), "%LMQ%t1%+%");
        assert_eq!(lmq_name("t1/#"), "%LMQ%t1%#%");
        assert_eq!(queue_name("t1/a"), "t1/a/");
        assert_eq!(p2p_lmq("c1"), "%LMQ%%p2p%c1%");
        assert_eq!(retry_lmq("c1"), "%LMQ%%retry%c1%");
    }

    #[test]
    fn dispatch_includes_matching_wildcards_only() {
        let w = vec![
            "t1/+".to_string(),
            "t1/a/#".to_string(),
            "t1/b/+".to_string(),
        ];
        assert_eq!(
            dispatch_queues("t1/a", &w),
            vec!["%LMQ%t1%a%", "%LMQ%t1%+%", "%LMQ%t1%a%#%"]
        );
        assert_eq!(dispatch_queues("t1/c/d", &w), vec!["%LMQ%t1%c%d%"]);
        assert_eq!(dispatch_queues("t1/p2p/dev9", &w), vec!["%LMQ%%p2p%dev9%"]);
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
    }
}
