//! `[[acl]]`: what each client may publish and subscribe to in the local broker.
//!
//! The rule shape is the cloud bridge's (`clients`, `publish`, `subscribe`, `{client}`),
//! plus `users`, `{username}` and `deny`, so operators learn one format:
//! - No rule at all: everything is allowed (as before rules existed).
//! - Otherwise the first rule whose `clients` pattern matches the client identifier, or
//!   whose `users` pattern matches its user name (for a mutual-TLS client: its
//!   certificate identity), applies; a client no rule applies to may do nothing.
//!   A pattern with a trailing `*` matches any suffix (`*` alone: everybody).
//! - `{client}` and `{username}` in a filter are replaced by the client identifier and
//!   the user name. A value that is empty or holds `/`, `+` or `#` (it could span
//!   levels or act as a wildcard) never matches such a filter.
//! - PUBLISH (and a will, checked at CONNECT): allowed when the topic matches one of
//!   `publish` and none of `deny`.
//! - SUBSCRIBE: allowed when the filter is equal to or narrower than one of `subscribe`
//!   (every topic it can match is allowed) and narrower than none of `deny`. A wider
//!   subscription (`#`) is allowed if `subscribe` allows it, but messages on `deny`
//!   topics are never delivered to that client (checked per message, as mosquitto
//!   checks read access).
//!
//! The agent's own messages (sensors, downlink, uplink) are not clients: no rule
//! applies to them.

use serde::Deserialize;

/// One `[[acl]]` rule (the module doc says how rules apply).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Client identifiers this rule applies to; a trailing `*` matches any suffix.
    #[serde(default)]
    pub clients: Vec<String>,
    /// User names (or certificate identities) this rule applies to; a trailing `*`
    /// matches any suffix.
    #[serde(default)]
    pub users: Vec<String>,
    /// Filters the client may publish to (`{client}`, `{username}` substituted).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the client may subscribe to (a subscription must be within one).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Filters the client may neither publish to, subscribe within, nor receive.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// What an ACL check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// PUBLISH (and wills).
    Publish,
    /// SUBSCRIBE.
    Subscribe,
}

/// Who a client is, for the rules.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Client identifier.
    pub client_id: String,
    /// User name, or the verified certificate identity; `None` for anonymous clients.
    pub username: Option<String>,
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// A value that may fill one topic level.
fn one_level(v: &str) -> bool {
    !v.is_empty() && !v.contains(['/', '+', '#'])
}

/// The rules as they apply to one client: its filters with `{client}` and `{username}`
/// substituted.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// `None`: no rules configured, everything is allowed.
    rule: Option<Applied>,
}

#[derive(Debug, Clone, Default)]
struct Applied {
    publish: Vec<String>,
    subscribe: Vec<String>,
    deny: Vec<String>,
}

impl Grants {
    /// The grants of `who` under `rules`.
    pub fn of(rules: &[AclRule], who: &Identity) -> Self {
        if rules.is_empty() {
            return Self { rule: None };
        }
        let user = who.username.as_deref();
        let Some(rule) = rules.iter().find(|r| {
            r.clients.iter().any(|p| pattern_matches(p, &who.client_id))
                || user.is_some_and(|u| r.users.iter().any(|p| pattern_matches(p, u)))
        }) else {
            return Self {
                rule: Some(Applied::default()),
            };
        };
        let fill = |filters: &[String]| -> Vec<String> {
            filters
                .iter()
                .filter_map(|f| substitute(f, &who.client_id, user))
                .collect()
        };
        Self {
            rule: Some(Applied {
                publish: fill(&rule.publish),
                subscribe: fill(&rule.subscribe),
                deny: fill(&rule.deny),
            }),
        }
    }

    /// Whether the client may publish to `topic` (`Access::Publish`) or subscribe to
    /// the filter `topic` (`Access::Subscribe`).
    pub fn allows(&self, access: Access, topic: &str) -> bool {
        let Some(rule) = &self.rule else {
            return true;
        };
        match access {
            Access::Publish => {
                rule.publish.iter().any(|f| mqtt::topic::matches(f, topic))
                    && !rule.deny.iter().any(|f| mqtt::topic::matches(f, topic))
            }
            Access::Subscribe => {
                rule.subscribe
                    .iter()
                    .any(|f| mqtt::topic::filter_within(topic, f))
                    && !rule
                        .deny
                        .iter()
                        .any(|f| mqtt::topic::filter_within(topic, f))
            }
        }
    }

    /// Whether a message on `topic` may be delivered to the client (no `deny` matches).
    pub fn receives(&self, topic: &str) -> bool {
        self.rule
            .as_ref()
            .is_none_or(|r| !r.deny.iter().any(|f| mqtt::topic::matches(f, topic)))
    }

    /// Topics never delivered to the client.
    pub fn deny(&self) -> Vec<String> {
        self.rule
            .as_ref()
            .map(|r| r.deny.clone())
            .unwrap_or_default()
    }
}

/// `filter` with `{client}` and `{username}` replaced; `None` if a placeholder has no
/// one-level value.
fn substitute(filter: &str, client: &str, user: Option<&str>) -> Option<String> {
    let mut f = filter.to_owned();
    if f.contains("{client}") {
        if !one_level(client) {
            return None;
        }
        f = f.replace("{client}", client);
    }
    if f.contains("{username}") {
        let u = user.filter(|u| one_level(u))?;
        f = f.replace("{username}", u);
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn who(c: &str, u: Option<&str>) -> Identity {
        Identity {
            client_id: c.to_owned(),
            username: u.map(str::to_owned),
        }
    }

    #[test]
    fn no_rules_allow_everything() {
        let g = Grants::of(&[], &who("a", None));
        assert!(g.allows(Access::Publish, "x/y"));
        assert!(g.allows(Access::Subscribe, "#"));
    }

    #[test]
    fn first_matching_rule_with_substitutions() {
        let rules = vec![
            rule(&[], &["alice"], &["u/{username}/#"], &["c/{client}/+"]),
            rule(&["dev-*"], &[], &["d/{client}"], &["cmd/#"]),
        ];
        let a = Grants::of(&rules, &who("x1", Some("alice")));
        assert!(a.allows(Access::Publish, "u/alice/t"));
        assert!(!a.allows(Access::Publish, "u/bob/t"));
        assert!(a.allows(Access::Subscribe, "c/x1/z"));
        assert!(!a.allows(Access::Subscribe, "c/x1/#"));
        let d = Grants::of(&rules, &who("dev-7", None));
        assert!(d.allows(Access::Publish, "d/dev-7"));
        assert!(!d.allows(Access::Publish, "u/alice/t"));
        assert!(d.allows(Access::Subscribe, "cmd/+/x"));
        // Matching no rule: nothing.
        let n = Grants::of(&rules, &who("other", None));
        assert!(!n.allows(Access::Publish, "d/other"));
        // No user name: `{username}` filters never match.
        let rules = vec![rule(&["*"], &[], &["u/{username}"], &[])];
        assert!(!Grants::of(&rules, &who("c", None)).allows(Access::Publish, "u/"));
        assert!(!Grants::of(&rules, &who("c", Some("a/b"))).allows(Access::Publish, "u/a/b"));
    }

    #[test]
    fn deny_wins() {
        let mut r = rule(&["*"], &[], &["#"], &["#"]);
        r.deny = vec!["test/nosubscribe".to_owned()];
        let g = Grants::of(&[r], &who("c", None));
        assert!(!g.allows(Access::Subscribe, "test/nosubscribe"));
        assert!(!g.allows(Access::Publish, "test/nosubscribe"));
        assert!(g.allows(Access::Subscribe, "#"));
        assert!(g.allows(Access::Publish, "test/other"));
        assert_eq!(g.deny(), ["test/nosubscribe"]);
        assert!(!g.receives("test/nosubscribe"));
        assert!(g.receives("test/other"));
    }
}
