//! TLS listener with mutual TLS: a client certificate signed by the configured CA
//! authenticates a client without a password (anonymous access off); no certificate, or
//! one from another CA, fails the handshake; nothing is stored for refused clients.
//! The client is Debian's mosquitto_pub.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_agent::config::{ListenerConfig, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use support::{config, start, stop};

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client_cert(
    dir: &Path,
    tag: &str,
    issuer: &(rcgen::Certificate, KeyPair),
) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "sensor-7");
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (
        write(dir, &format!("{tag}.pem"), cert.pem()),
        write(dir, &format!("{tag}.key"), key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_authenticates_by_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let root = ca("test CA");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server_key = KeyPair::generate().unwrap();
    let server = p.signed_by(&server_key, &root.0, &root.1).unwrap();
    let ca_pem = write(&pki, "ca.pem", root.0.pem());
    let server_pem = write(&pki, "server.pem", server.pem());
    let server_key = write(&pki, "server.key", server_key.serialize_pem());
    let good = client_cert(&pki, "good", &root);
    let bad = client_cert(&pki, "bad", &ca("other CA"));

    let mut c = config();
    c.auth.allow_anonymous = Some(false);
    c.uplink.topics = vec!["#".into()];
    c.listeners.push(ListenerConfig {
        name: "tls".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            cert: server_pem,
            key: server_key,
            client_ca: Some(ca_pem.clone()),
            require_client_cert: true,
        }),
        websocket: false,
    });
    let (agent, _) = start(c, dir.path().join("state").as_path()).await;
    let port = agent.local_addr("tls").unwrap().port().to_string();
    let publish = move |cert: Option<&(PathBuf, PathBuf)>| {
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
        if let Some((c, k)) = cert {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
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
