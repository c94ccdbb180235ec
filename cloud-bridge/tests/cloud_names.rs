#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Names RocketMQ would misread (`mqtt::cloud_topic`), tried by an authenticated client at
//! every entry point against the real broker, with Python paho-mqtt as the client:
//!
//! - a `,` in a topic split one LMQ name into two in `INNER_MULTI_DISPATCH`, so a gateway
//!   allowed only `{first}/gw-1/#` reached gw-2's command queue and its p2p queue;
//! - a topic over 249 bytes made an LMQ name over 255 bytes, a directory name the broker
//!   cannot create: it then stopped dispatching every LMQ ("File name too long");
//! - `%` collides in LMQ names, U+0001/U+0002 separate message properties.
//!
//! Each attempt must be refused with the MQTT reason code (nothing is stored: no retained
//! record, no wildcard registration), and afterwards the broker still
//! dispatches other clients' messages, and nothing reached a queue outside the attacker's
//! ACL.

mod harness;

use std::time::Duration;

use harness::clients::Proto;
use harness::subscriber::External;
use harness::{config_text, password, start_bridge};
use test_support::rocketmq::{max_offset, tool};
use test_support::unique;

/// Runs attempts (`kind`: publish, will, subscribe or connect) with paho-mqtt, 16 at a
/// time (`harness::paho_sessions`); per attempt: the case, `connack`, `puback`, `suback`
/// and `disconnect` reason codes (null when none came).
fn attempts(addr: std::net::SocketAddr, cases: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::{Value, json};
    let cases = cases.as_array().expect("cases");
    let sessions: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut s = json!({"client_id": c["client_id"], "proto": c["proto"]});
            match c["kind"].as_str() {
                Some("publish") => {
                    s["ops"] = json!([{"op": "publish", "topic": c["topic"], "qos": 1,
                        "retain": c["retain"], "payload": "attack"}]);
                }
                Some("subscribe") => {
                    s["ops"] = json!([{"op": "subscribe", "filter": c["topic"], "qos": 1}]);
                }
                Some("will") => {
                    s["will_bytes"] = json!(4);
                    s["will_topic"] = c["topic"].clone();
                }
                _ => {}
            }
            s
        })
        .collect();
    let results = harness::paho_sessions::run(addr, 16, &sessions);
    cases
        .iter()
        .zip(results)
        .map(|(case, r)| {
            let code = r["ops"].get(0).cloned().unwrap_or(Value::Null);
            let of = |kind: &str| {
                if case["kind"] == kind {
                    code.clone()
                } else {
                    Value::Null
                }
            };
            json!({"case": case, "connack": r["connack"], "disconnect": r["disconnect"],
                "puback": of("publish"), "suback": of("subscribe")})
        })
        .collect()
}

fn kv(namespace: &str, key: &str) -> serde_json::Value {
    tool(&["get-kv", "--namespace", namespace, "--key", key]).expect("get-kv")[0]["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separators_and_long_names_are_refused_everywhere_and_dispatch_goes_on() {
    let first = unique("inj");
    let acl = format!(
        "[[acl]]\nclients = [\"app-*\"]\npublish = [\"{first}/#\"]\nsubscribe = [\"{first}/#\"]\n\
         [[acl]]\nclients = [\"gw-*\"]\npublish = [\"{first}/{{client}}/#\"]\nsubscribe = [\"{first}/{{client}}/cmd/#\"]\n"
    );
    let (server, _) = start_bridge(&config_text(&first, &[], &acl)).await;
    let addr = server.local_addr("mqtt").expect("listener");
    let gw1 = format!("gw-1{}", unique(""));
    let gw2 = format!("gw-2{}", unique(""));

    // The topics of the audit, and one per refused character; each attempt from a
    // gateway of its own (the attempts run in parallel), inside its own ACL.
    let victim = format!("{first}/{gw2}/cmd/valve");
    let topics = |gw: &str| {
        let mut t = vec![
            format!("{first}/{gw}/x,/LMQ/{victim}"),
            format!("{first}/{gw}/x,/LMQ//p2p/{gw2}"),
            format!("{first}/{gw}/x,,y"),
            format!("{first}/{gw}/{}", "a".repeat(250)),
        ];
        for c in [",", "%", "\u{1}", "\u{2}", "\n", "\u{7f}"] {
            t.push(format!("{first}/{gw}/a{c}b"));
        }
        t
    };
    let mut cases = Vec::new();
    let mut n = 0;
    let mut gw = || {
        n += 1;
        format!("{gw1}-{n}")
    };
    for proto in [5, 3] {
        for i in 0..topics("").len() {
            for (kind, retain) in [("publish", false), ("publish", true), ("will", false)] {
                let g = gw();
                cases.push(serde_json::json!({"kind": kind, "proto": proto,
                    "topic": topics(&g)[i], "retain": retain, "client_id": g}));
            }
            // The filter form of the same name, and a wildcard one.
            let g = gw();
            let filter = topics(&format!("{g}/cmd"))[i].clone();
            cases.push(serde_json::json!({"kind": "subscribe", "proto": proto,
                "topic": filter, "client_id": g}));
            let g = gw();
            let filter = format!("{}/+", topics(&format!("{g}/cmd"))[i]);
            cases.push(serde_json::json!({"kind": "subscribe", "proto": proto,
                "topic": filter, "client_id": g}));
        }
    }
    let attempted: Vec<String> = cases
        .iter()
        .filter(|c| c["retain"] == true)
        .map(|c| c["topic"].as_str().unwrap_or_default().to_owned())
        .collect();
    let retained_before = max_offset("mqttRetained");
    let tried = cases.len();
    let results = attempts(addr, &serde_json::Value::Array(cases));
    assert_eq!(results.len(), tried);
    for r in &results {
        let case = &r["case"];
        let v5 = case["proto"] == 5;
        match case["kind"].as_str().unwrap() {
            "publish" => {
                assert_eq!(r["connack"], 0, "{r}");
                assert!(
                    r["puback"].is_null(),
                    "a refused publish was acknowledged: {r}"
                );
                if v5 {
                    assert_eq!(r["disconnect"], 0x90, "{r}");
                } else {
                    assert!(!r["disconnect"].is_null(), "3.1.1: closed: {r}");
                }
            }
            "will" if v5 => assert_eq!(r["connack"], 0x90, "{r}"),
            // 3.1.1 has no code for it: any refusal.
            "will" => assert!(r["connack"].as_u64().is_some_and(|c| c != 0), "{r}"),
            "subscribe" => {
                assert_eq!(r["connack"], 0, "{r}");
                // 0x8F under MQTT 5, 0x80 (failure) under 3.1.1.
                let expected = if v5 { 0x8F } else { 0x80 };
                assert_eq!(r["suback"], expected, "{r}");
            }
            other => panic!("{other}"),
        }
    }

    // Client identifiers: separators, wildcards, levels, controls, and 60,000 bytes.
    let mut cases = Vec::new();
    for proto in [5, 3] {
        for id in [
            "gw-a,b".to_owned(),
            "gw-a%b".to_owned(),
            "gw-a/b".to_owned(),
            "gw-+".to_owned(),
            "gw-#".to_owned(),
            "gw-a\u{2}b".to_owned(),
            format!("gw-{}", "c".repeat(60_000)),
            format!("gw-{}", "c".repeat(126)),
        ] {
            cases.push(serde_json::json!({"kind": "connect", "proto": proto, "client_id": id}));
        }
    }
    for r in attempts(addr, &serde_json::Value::Array(cases)) {
        // 0x85 under MQTT 5; 3.1.1 return code 2, which paho shows as 0x85 too.
        assert_eq!(r["connack"], 0x85, "{}", r["case"]["client_id"]);
    }

    // Nothing stored outside RocketMQ's log: no retained entry, no wildcard registered.
    let config = cloud_bridge::config::Config::parse(&config_text(&first, &[], ""), "t").unwrap();
    // The retained table (a compaction topic) got no record, as the Java client sees it.
    assert_eq!(max_offset(&config.topics.retained_topic), retained_before);
    assert!(!attempted.is_empty());
    // The Java client's view of the wildcard list of this first-level topic: none.
    let wildcards = kv("LMQ", &first);
    assert!(wildcards.is_null() || wildcards == "", "{wildcards}");
    for bad in [
        format!("{first}/a,b/+"),
        format!("{first}/a%b/+"),
        format!("{first}/{}/+", "a".repeat(250)),
    ] {
        assert!(
            cloud_bridge::admin::wildcard_add(&config, &bad)
                .await
                .is_err(),
            "wildcard add {bad:?}"
        );
    }

    // The broker still dispatches: gw-2 gets an application's command, and that command
    // is the only message in gw-2's queues.
    let sub = External::paho(
        addr,
        Proto::V5,
        &gw2,
        &password(&gw2),
        &format!("{first}/{gw2}/cmd/#"),
        1,
        1,
    );
    let app = format!("app-{}", unique(""));
    tokio::time::sleep(Duration::from_secs(2)).await;
    harness::clients::paho_publish(
        addr,
        Proto::V311,
        &app,
        &password(&app),
        &harness::clients::Msg {
            topic: victim.clone(),
            qos: 1,
            payload: b"close".to_vec(),
            user: Vec::new(),
        },
    );
    let lines = sub.lines();
    assert_eq!(lines, vec![format!("{victim} close 1")]);
    assert_eq!(max_offset(&cloud_bridge::lmq::lmq_name(&victim)), 1);
    assert_eq!(max_offset(&cloud_bridge::lmq::p2p_lmq(&gw2)), 0);
    server.stop(Duration::from_secs(2)).await;
}
