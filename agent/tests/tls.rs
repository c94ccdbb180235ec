//! TLS listener with mutual TLS: a client certificate signed by the configured CA
//! authenticates a client without a password (anonymous access off); no certificate, or
//! one from another CA, fails the handshake; nothing is stored for refused clients.
//! The client is Debian's mosquitto_pub.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::Command;

use edge_agent::config::{ListenerConfig, TlsConfig};
use support::{config, start, stop};
use test_support::certs::{ClientCert, Pki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_authenticates_by_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let good = pki.client("sensor-7", true);
    let bad = pki.client("sensor-7", false);
    let ca_pem = pki.ca.clone();

    let mut c = config();
    c.auth.allow_anonymous = Some(false);
    c.uplink.topics = vec!["#".into()];
    c.listeners.push(ListenerConfig {
        name: "tls".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(ca_pem.clone()),
            require_client_cert: true,
        }),
        websocket: false,
    });
    let (agent, _) = start(c, dir.path().join("state").as_path()).await;
    let port = agent.local_addr("tls").unwrap().port().to_string();
    let publish = move |cert: Option<&ClientCert>| {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "tls/t",
            "-m",
            "x",
        ])
        .arg("--cafile")
        .arg(&ca_pem);
        if let Some(c) = cert {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        cmd.output().expect("mosquitto_pub")
    };
    let (ok, none, other) = tokio::task::spawn_blocking(move || {
        (publish(Some(&good)), publish(None), publish(Some(&bad)))
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!none.status.success(), "no client certificate");
    assert!(!other.status.success(), "certificate from another CA");
    assert_eq!(agent.journal().stats().await.unwrap().entries, 1);
    stop(agent).await;
}
