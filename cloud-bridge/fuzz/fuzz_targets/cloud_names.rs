//! Topic and filter validation of both servers against the LMQ name builder. The input is
//! split on U+0000 (which MQTT forbids in names): a topic, a local device topic, then
//! wildcard filters. Properties:
//!
//! - whatever the bridge accepts as a topic (MQTT's rules, then `mqtt::cloud_topic`) and
//!   as registered wildcards (`lmq::check_wildcard`) is dispatched into exactly the LMQs of
//!   its own topic (or p2p peer) and of the matching wildcards: the broker's split of
//!   `INNER_MULTI_DISPATCH` on `,` gives back exactly those names, each a valid file name
//!   (at most 255 bytes), each decoding back to the one topic or filter it came from;
//! - a cloud topic the edge agent's uplink map produces is one the bridge accepts.
#![no_main]

use cloud_bridge::lmq;
use edge_agent::uplink::TopicMap;
use libfuzzer_sys::fuzz_target;

/// The topic or filter an LMQ name stands for (inverse of `lmq::lmq_name`).
fn decode(lmq_name: &str) -> Option<String> {
    let rest = lmq_name.strip_prefix(lmq::LMQ_PREFIX)?;
    Some(match rest.strip_suffix('%') {
        Some(queue) => queue.replace('%', "/"),
        None => rest.to_owned(),
    })
}

fn bridge_accepts_topic(topic: &str) -> bool {
    mqtt::topic::validate_name(topic).is_ok() && mqtt::cloud_topic::check_topic(topic).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let topic = parts.next().unwrap_or_default();
    let local = parts.next().unwrap_or_default();
    let first = mqtt::topic::first_level(topic).to_owned();
    let firsts = [first.clone()];
    let wildcards: Vec<String> = parts
        .filter(|w| lmq::check_wildcard(w, &firsts).is_ok())
        .map(str::to_owned)
        .collect();
    for w in &wildcards {
        let name = lmq::lmq_name(w);
        assert!(name.len() <= 255, "{name:?}");
        assert_eq!(decode(&name).as_deref(), Some(w.as_str()));
    }

    if bridge_accepts_topic(topic) && !first.is_empty() {
        let queues = lmq::dispatch_queues(topic, &wildcards);
        let joined = queues.join(",");
        let split: Vec<&str> = joined.split(',').collect();
        assert_eq!(split, queues, "the broker would split {joined:?} differently");
        for q in &queues {
            assert!(q.len() <= 255, "{q:?}");
            assert!(!q.contains(['\u{1}', '\u{2}']), "{q:?}");
        }
        match lmq::p2p_peer(topic) {
            Some(peer) => assert_eq!(queues, vec![lmq::p2p_lmq(peer)]),
            None => {
                assert_eq!(decode(&queues[0]).as_deref(), Some(topic));
                let mut expected: Vec<&str> = wildcards
                    .iter()
                    .filter(|w| mqtt::topic::matches(w, topic))
                    .map(String::as_str)
                    .collect();
                let mut got: Vec<String> =
                    queues[1..].iter().filter_map(|q| decode(q)).collect();
                expected.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, expected);
            }
        }
    }

    // The agent's default rule (every local topic under `{first}/{gateway}/`).
    let map = TopicMap::new(vec![(String::new(), "t1/gw-1/".to_owned())]);
    if mqtt::topic::validate_name(local).is_ok()
        && let Ok(cloud) = map.to_cloud(local)
    {
        assert!(bridge_accepts_topic(&cloud), "{cloud:?}");
    }
});
