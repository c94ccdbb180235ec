//! Test PKI made with rcgen: a CA, a server certificate for 127.0.0.1/localhost, client
//! certificates signed by the CA, and ones from an untrusted CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

#[derive(Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed CA");
    (cert, key)
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let (ca_cert, ca_key) = ca("test CA");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        p.distinguished_name.push(DnType::CommonName, "bridge");
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("server cert");
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Pki {
            dir: dir.to_owned(),
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", cert.pem()),
            server_key: write("server.key", key.serialize_pem()),
            ca_cert,
            ca_key,
        }
    }

    pub fn client(&self, cn: &str, trusted: bool) -> ClientCert {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = if trusted {
            p.signed_by(&key, &self.ca_cert, &self.ca_key)
                .expect("client cert")
        } else {
            let (other, other_key) = ca("untrusted CA");
            p.signed_by(&key, &other, &other_key).expect("client cert")
        };
        let tag = if trusted { "trusted" } else { "untrusted" };
        let c = self.dir.join(format!("{cn}-{tag}.pem"));
        let k = self.dir.join(format!("{cn}-{tag}.key"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        ClientCert { cert: c, key: k }
    }
}
