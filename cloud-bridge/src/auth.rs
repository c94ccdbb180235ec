//! Who may connect, and what they may publish or subscribe to.
//!
//! - rocketmq-mqtt's HmacSHA1 scheme: the username equals the configured one and the password
//!   is `Base64(HmacSHA1(key = secretKey, data = clientId))` (UTF-8, standard base64 with
//!   padding), compared in constant time;
//! - a client certificate verified by a mutual-TLS listener names the client instead: its
//!   identity is the certificate's, and its client id must be that identity;
//! - ACLs: the first rule whose `clients` pattern matches the identity decides; `{client}`
//!   in a rule's filters stands for the identity. Without rules everything is allowed.

use base64::Engine;
use hmac::{Hmac, Mac};
use mqtt::broker::{Peer, Refusal};
use mqtt::packet::{Connect, Reason};
use sha1::Sha1;

use crate::config::{AclRule, AuthConfig};

/// The password rocketmq-mqtt expects from `client_id`.
pub fn hmac_password(secret_key: &str, client_id: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(client_id.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates a CONNECT; returns the client's identity (used by ACLs).
pub fn authenticate(auth: &AuthConfig, connect: &Connect, peer: &Peer) -> Result<String, Refusal> {
    if let Some(identity) = &peer.tls_identity {
        if *identity != connect.client_id {
            return Err(Refusal::new(
                Reason::NotAuthorized,
                format!(
                    "client id {:?} does not match the certificate identity {identity:?}",
                    connect.client_id
                ),
            ));
        }
        return Ok(identity.clone());
    }
    match (&connect.username, &connect.password) {
        (None, None) if auth.allow_anonymous => Ok(connect.client_id.clone()),
        (Some(user), Some(password)) => {
            let expected = hmac_password(&auth.secret_key, &connect.client_id);
            let user_ok = constant_time_eq(user.as_bytes(), auth.username.as_bytes());
            let pass_ok = constant_time_eq(password.as_bytes(), expected.as_bytes());
            if user_ok && pass_ok {
                Ok(connect.client_id.clone())
            } else {
                Err(Refusal::new(
                    Reason::BadUserNameOrPassword,
                    "bad user name or password",
                ))
            }
        }
        _ => Err(Refusal::new(
            Reason::BadUserNameOrPassword,
            "user name and password are required",
        )),
    }
}

/// What an ACL check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// PUBLISH (and wills).
    Publish,
    /// SUBSCRIBE.
    Subscribe,
}

fn pattern_matches(pattern: &str, identity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => identity.starts_with(prefix),
        None => pattern == identity,
    }
}

/// Whether `identity` may publish to `topic` (or subscribe to the filter `topic`).
pub fn allowed(rules: &[AclRule], identity: &str, access: Access, topic: &str) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Some(rule) = rules
        .iter()
        .find(|r| r.clients.iter().any(|p| pattern_matches(p, identity)))
    else {
        return false;
    };
    let filters = match access {
        Access::Publish => &rule.publish,
        Access::Subscribe => &rule.subscribe,
    };
    // `{client}` fills one level: an identity that could span levels or act as a wildcard
    // (client ids are refused for that at CONNECT; certificate names are checked here
    // too) never matches a `{client}` filter.
    let one_level = mqtt::cloud_topic::check_client_id(identity, usize::MAX).is_ok();
    filters.iter().any(|f| {
        if f.contains("{client}") && !one_level {
            return false;
        }
        let f = f.replace("{client}", identity);
        match access {
            Access::Publish => mqtt::topic::matches(&f, topic),
            // A subscription is allowed when every topic it can match is allowed: the
            // filter is equal to, or narrower than, an allowed filter.
            Access::Subscribe => mqtt::topic::filter_within(topic, &f),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::packet::Version;

    fn connect(client: &str, user: Option<&str>, pass: Option<&str>) -> Connect {
        Connect {
            version: Version::V311,
            client_id: client.into(),
            clean_start: true,
            keep_alive: 30,
            username: user.map(Into::into),
            password: pass.map(Into::into),
            will: None,
            session_expiry_interval: 0,
            receive_maximum: 10,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
        }
    }

    fn peer(identity: Option<&str>) -> Peer {
        Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            listener: "t".into(),
            tls_identity: identity.map(Into::into),
        }
    }

    fn auth() -> AuthConfig {
        AuthConfig {
            username: "u".into(),
            secret_key: "s".into(),
            allow_anonymous: false,
        }
    }

    #[test]
    fn hmac_matches_java_mac_hmacsha1() {
        // javax.crypto.Mac HmacSHA1, key "key", data "The quick brown fox jumps over the lazy dog"
        // = de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        assert_eq!(
            hmac_password("key", "The quick brown fox jumps over the lazy dog"),
            "3nybhbi3iqa8ino29wqQcBydtNk="
        );
    }

    #[test]
    fn password_checks() {
        let good = hmac_password("s", "c1");
        assert!(authenticate(&auth(), &connect("c1", Some("u"), Some(&good)), &peer(None)).is_ok());
        let r = authenticate(&auth(), &connect("c2", Some("u"), Some(&good)), &peer(None));
        assert_eq!(r.unwrap_err().reason, Reason::BadUserNameOrPassword);
        let r = authenticate(&auth(), &connect("c1", None, None), &peer(None));
        assert_eq!(r.unwrap_err().reason, Reason::BadUserNameOrPassword);
    }

    #[test]
    fn certificate_identity_must_be_the_client_id() {
        assert_eq!(
            authenticate(&auth(), &connect("gw-1", None, None), &peer(Some("gw-1"))).unwrap(),
            "gw-1"
        );
        let r = authenticate(&auth(), &connect("gw-2", None, None), &peer(Some("gw-1")));
        assert_eq!(r.unwrap_err().reason, Reason::NotAuthorized);
    }

    #[test]
    fn acls() {
        let rules = vec![AclRule {
            clients: vec!["gw-*".into()],
            publish: vec!["t1/{client}/#".into()],
            subscribe: vec!["t1/{client}/cmd/#".into()],
        }];
        assert!(allowed(&rules, "gw-1", Access::Publish, "t1/gw-1/temp"));
        assert!(!allowed(&rules, "gw-1", Access::Publish, "t1/gw-2/temp"));
        assert!(!allowed(&rules, "other", Access::Publish, "t1/other/x"));
        assert!(allowed(&rules, "gw-1", Access::Subscribe, "t1/gw-1/cmd/+"));
        assert!(!allowed(&rules, "gw-1", Access::Subscribe, "t1/+/cmd/x"));
        assert!(!allowed(&rules, "gw-1", Access::Subscribe, "t1/gw-1/#"));
        assert!(allowed(&[], "x", Access::Publish, "anything"));
    }

    #[test]
    fn client_placeholder_never_expands_to_a_wildcard_or_levels() {
        let rules = vec![AclRule {
            clients: vec!["*".into()],
            publish: vec!["t1/{client}/#".into()],
            subscribe: vec!["t1/{client}/cmd/#".into()],
        }];
        // Without the guard, "+" would make `t1/+/#` and "#" would make `t1/#/#`.
        for identity in ["+", "#", "gw-1/../gw-2", "a,b", "a%b"] {
            assert!(
                !allowed(&rules, identity, Access::Publish, "t1/gw-2/cmd/valve"),
                "{identity}"
            );
            assert!(
                !allowed(&rules, identity, Access::Subscribe, "t1/gw-2/cmd/+"),
                "{identity}"
            );
        }
        assert!(!allowed(&rules, "gw-1/x", Access::Publish, "t1/gw-1/x/y"));
    }
}
