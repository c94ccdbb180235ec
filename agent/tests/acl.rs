//! `[[acl]]` in the local broker, judged by paho-mqtt 2.x (3.1.1 and 5) and
//! mosquitto_pub/sub -V 5: a refused SUBSCRIBE gets 0x87 (3.1.1: 0x80, 3.9.3); a refused
//! PUBLISH gets PUBACK/PUBREC 0x87 (MQTT 5) or is acknowledged and dropped (3.1.1); a
//! will that may not be published refuses the CONNECT; `{client}` and `{username}`;
//! `deny` topics are never delivered.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};

use edge_agent::config::{AclRule, Config};
use support::{config, paho_async, start, stop};

fn rule(clients: &[&str], users: &[&str], publish: &[&str], subscribe: &[&str]) -> AclRule {
    let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
    AclRule {
        clients: v(clients),
        users: v(users),
        publish: v(publish),
        subscribe: v(subscribe),
        deny: Vec::new(),
    }
}

fn with_acl() -> Config {
    let mut c = config();
    c.auth.allow_anonymous = Some(true);
    c.auth.users.push(edge_agent::config::UserConfig {
        name: "alice".into(),
        password_hash: edge_agent::auth::hash_password("pw").unwrap(),
    });
    let deny = vec!["pub/secret/#".to_owned(), "test/nosubscribe".to_owned()];
    let mut watcher = rule(&["watch*"], &[], &[], &["#"]);
    watcher.deny = deny.clone();
    let mut all = rule(
        &["*"],
        &[],
        &["pub/#", "dev/{client}/#"],
        &["pub/#", "dev/{client}/#"],
    );
    all.deny = deny;
    c.acl = vec![
        rule(
            &[],
            &["alice"],
            &["u/{username}/#", "pub/secret/#"],
            &["u/{username}/#"],
        ),
        rule(&["locked"], &[], &[], &[]),
        watcher,
        all,
    ];
    c
}

/// 3.9.3 / 3.8.4: SUBSCRIBE refused with 0x87 (MQTT 5) and 0x80 (3.1.1), the allowed
/// filters of the same packet granted; `deny` topics never delivered, even on `#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refused_subscribe_gets_0x87_or_0x80_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(with_acl(), dir.path()).await;
    paho_async(
        r##"
for v5 in (True, False):
    bad = 0x87 if v5 else 0x80
    c = C("c1", v5=v5)
    c.connect()
    assert c.subscribe("test/nosubscribe", 1) == [bad], "deny"
    assert c.subscribe("dev/c2/#", 1) == [bad], "{client} is c1"
    assert c.subscribe("dev/c1/+", 1) == [1]
    assert c.subscribe("pub/secret/x", 1) == [bad]
    assert c.subscribe("#", 1) == [bad]
    w = C("watch-" + str(v5), v5=v5)
    w.connect()
    assert w.subscribe("pub/secret/x", 1) == [bad]
    assert w.subscribe("#", 1) == [1]
    p = C("c2", v5=v5)
    p.connect()
    # Denied to this publisher: dropped (3.1.1) or refused (5), reaches nobody.
    p.publish("pub/secret/x", "hidden", 1)
    p.publish("pub/open", "seen", 1)
    p.publish("dev/c2/t", "own subtree", 1)
    w.wait_msgs(2)
    time.sleep(0.5)
    assert sorted(m[0] for m in w.got) == ["dev/c2/t", "pub/open"], w.got
    # A publisher allowed to publish a topic another client is denied: not delivered
    # to that client, even on "#".
    a = C("a-" + str(v5), v5=v5, username="alice", password="pw")
    a.connect()
    w.got.clear()
    assert a.publish("pub/secret/y", "for alice's rule only", 1) == 0
    p.publish("pub/open", "after", 1)
    w.wait_msgs(1)
    time.sleep(0.5)
    assert [m[1] for m in w.got] == ["after"], ("deny is checked per message", w.got)
    # Nor as a retained message on subscribe.
    assert a.publish("pub/secret/r", "kept", 1, retain=True) == 0
    w2 = C("watch2-" + str(v5), v5=v5)
    w2.connect()
    assert w2.subscribe("#", 1) == [1]
    p.publish("pub/open", "after2", 1)
    w2.wait_msgs(1)
    time.sleep(0.5)
    assert [m[1] for m in w2.got] == ["after2"], ("no denied retained message", w2.got)
    a.publish("pub/secret/r", "", 1, retain=True)
    w2.disconnect()
    l = C("locked", v5=v5)
    l.connect()
    assert l.subscribe("pub/open", 1) == [bad], "a rule with nothing allows nothing"
    for x in (c, w, p, l, a):
        x.disconnect()
    l = C("locked", v5=v5)
    l.connect()
    assert l.subscribe("pub/open", 1) == [bad], "a rule with nothing allows nothing"
    for x in (c, p, l):
        x.disconnect()
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// 3.3.4 / 4.13: a refused PUBLISH gets PUBACK/PUBREC 0x87 under MQTT 5, is acknowledged
/// and dropped under 3.1.1 (the connection stays open), and reaches nobody;
/// `{username}` fills the user's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refused_publish_gets_0x87_or_is_dropped_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(with_acl(), dir.path()).await;
    paho_async(
        r##"
watch = C("watcher")
watch.connect()
watch.subscribe("#", 1)
a = C("a5", username="alice", password="pw")
a.connect()
assert a.publish("u/alice/x", "mine", 1) == 0
assert a.publish("u/bob/x", "not mine", 1) == 0x87
a.publish("u/bob/x", "not mine", 2)  # paho ignores PUBREC's reason (mosquitto_pub checks it)
a.publish("u/bob/x", "not mine", 0)
o = C("o3", v5=False, username="alice", password="pw")
o.connect()
assert o.publish("u/bob/y", "not mine 3.1.1", 1) == 0, "acknowledged"
assert o.publish("u/alice/y", "still connected", 1) == 0
watch.wait_msgs(2)
time.sleep(0.5)
assert sorted(m[1] for m in watch.got) == ["mine", "still connected"], watch.got
assert a.subscribe("u/alice/#", 1) == [1]
assert a.subscribe("pub/#", 1) == [0x87], "alice's rule comes first"
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// A will whose topic the client may not publish refuses the CONNECT with 0x87 (3.1.1:
/// 5, not authorized), as mosquitto does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_will_not_allowed_refuses_connect_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(with_acl(), dir.path()).await;
    paho_async(
        r##"
c = C("w1")
c.will = ("other/will", b"gone", 1)
assert c.connect()[1] == 0x87, c.connack
c.c.loop_stop()
ok = C("w2")
ok.will = ("dev/w2/will", b"gone", 1)
assert ok.connect()[1] == 0
ok.disconnect()
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// mosquitto_sub/pub -V 5: the refused subscription is reported as denied, the refused
/// QoS 1 publish as not authorized, the allowed ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_mosquitto_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(with_acl(), dir.path()).await;
    let port = addr.port().to_string();
    tokio::task::spawn_blocking(move || {
        let base = |tool: &str| {
            let mut c = Command::new(tool);
            c.args(["-h", "127.0.0.1", "-p", &port, "-V", "5"]);
            c.stdin(Stdio::null());
            c
        };
        let out = base("mosquitto_sub")
            .args(["-i", "m1", "-t", "test/nosubscribe", "-C", "1", "-W", "3"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("denied"), "{err} {:?}", out.status);
        let sub = base("mosquitto_sub")
            .args(["-i", "m2", "-t", "pub/#", "-q", "1", "-C", "1", "-W", "10"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        for q in ["1", "2"] {
            let out = base("mosquitto_pub")
                .args(["-i", "m3", "-t", "other/x", "-q", q, "-m", "no"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.to_lowercase().contains("not authori"), "QoS {q}: {err}");
        }
        let out = base("mosquitto_pub")
            .args(["-i", "m3", "-t", "pub/x", "-q", "1", "-m", "yes"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = sub.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "yes\n");
    })
    .await
    .unwrap();
    stop(agent).await;
}

/// A rule without `clients` or `users`, or with a bad filter, is a configuration error.
#[test]
fn acl_config_is_checked() {
    let base = edge_agent::config::DEFAULT_CONFIG;
    for (extra, field) in [
        ("[[acl]]\npublish = [\"a\"]\n", "acl[0]"),
        (
            "[[acl]]\nclients = [\"*\"]\nsubscribe = [\"a/#/b\"]\n",
            "acl[0].subscribe",
        ),
    ] {
        let e = Config::parse(&format!("{base}\n{extra}"), "test").unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    let ok = "[[acl]]\nusers = [\"u*\"]\npublish = [\"x/{username}/#\"]\ndeny = [\"x/{client}\"]\n";
    let c = Config::parse(&format!("{base}\n{ok}"), "test").unwrap();
    assert_eq!(c.acl.len(), 1);
}
