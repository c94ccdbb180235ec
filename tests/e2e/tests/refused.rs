//! Bad certificates and credentials on the uplink: the agent refuses them or is refused,
//! says so clearly in its log (error level, with the reason), retries only at its longest
//! backoff (no spinning), and keeps every message in the journal.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use e2e::{Agent, Bridge, device_publish, numbered, wait_log};
use test_support::certs::Pki;
use test_support::unique;

fn refused_case(tls: bool, uplink: impl Fn(&Bridge, &Pki, &str) -> String, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2eref");
    let gateway = unique("gw");
    let pki = Pki::new(&dir.path().join("pki"));
    let bridge = Bridge::start(dir.path(), &first, tls.then_some(&pki), "");
    let agent = Agent::start(
        dir.path(),
        &gateway,
        &first,
        &uplink(&bridge, &pki, &gateway),
        "",
    );
    device_publish(agent.port, "dev-1", "line/c", 1, &numbered(20));
    wait_log(&agent.process, "uplink refused", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.process.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("uplink refused"))
        .collect();
    assert!(
        refusals[0].contains("ERROR"),
        "logged as an error: {}",
        refusals[0]
    );
    assert!(
        refusals[0].contains(expect),
        "the reason is named ({expect}): {}",
        refusals[0]
    );
    // The longest backoff here is 1 s: about 4 attempts in 3+ s, not hundreds.
    assert!(
        refusals.len() <= 8,
        "{} refusals in ~3 s: spinning",
        refusals.len()
    );
    assert!(!log.contains("uplink connected"));
    assert_eq!(agent.journal_depth(), 20, "nothing is lost or dropped");
    let (running, status) = agent.status();
    assert!(
        running,
        "edge-agent status reaches the running agent:\n{status}"
    );
    assert!(
        status.contains("refused") && status.contains(expect),
        "edge-agent status shows the refusal and its reason:\n{status}"
    );
}

fn tls(
    bridge: &Bridge,
    ca: &std::path::Path,
    cert: &test_support::certs::ClientCert,
    password: &str,
) -> String {
    format!(
        "bridge = \"localhost:{}\"\nusername = \"demo\"\npassword = {password:?}\ntls = {{ ca = {ca:?}, cert = {:?}, key = {:?} }}",
        bridge.port, cert.cert, cert.key
    )
}

#[test]
fn a_wrong_password_is_refused_clearly() {
    // (With mutual TLS the bridge takes the certificate as the identity; the password
    // matters on its plain and server-only TLS listeners.)
    refused_case(
        false,
        |b, _, _| {
            format!(
                "bridge = \"127.0.0.1:{}\"\nusername = \"demo\"\npassword = \"wrong\"",
                b.port
            )
        },
        "BadUserNamePassword",
    );
}

#[test]
fn a_gateway_certificate_the_bridge_does_not_trust_is_refused_clearly() {
    refused_case(
        true,
        |b, pki, gw| tls(b, &pki.ca, &pki.client(gw, false), &b.password(gw)),
        "TLS",
    );
}

#[test]
fn a_bridge_certificate_from_another_ca_is_refused_clearly() {
    refused_case(
        true,
        |b, pki, gw| {
            // Pin a CA that did not sign the bridge's certificate.
            let other = Pki::new(&pki.dir.join("other"));
            tls(b, &other.ca, &pki.client(gw, true), &b.password(gw))
        },
        "certificate",
    );
}
