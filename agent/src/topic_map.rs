//! Local ↔ cloud topic names: prefix rules, first match wins. Uplink: a local topic that
//! starts with a rule's `local` prefix becomes `cloud` + the rest (default rule: every
//! topic gets `{first}/{gateway}/` in front). Downlink: the reverse, a cloud topic that
//! starts with a rule's `cloud` prefix becomes `local` + the rest.

/// Why a local topic has no cloud topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsendable {
    /// No rule maps it.
    NoRule,
    /// Its cloud topic is one RocketMQ cannot carry (`mqtt::cloud_topic`).
    Refused(mqtt::cloud_topic::CloudNameError),
}

/// The expanded rules.
#[derive(Debug, Clone)]
pub struct TopicMap {
    rules: Vec<(String, String)>,
}

impl TopicMap {
    /// Rules as `(local prefix, cloud prefix)`, in priority order.
    pub fn new(rules: Vec<(String, String)>) -> Self {
        Self { rules }
    }

    /// The cloud topic for a local one. No rule: the uplink removes the entry from the
    /// journal unsent, counted as `unmapped`. A cloud topic that breaks the rules of
    /// `mqtt::cloud_topic` (a device's `,` or `%` would split or collide in RocketMQ's
    /// queue names) is refused: the broker does not journal it.
    pub fn to_cloud(&self, local: &str) -> Result<String, Unsendable> {
        let cloud = self
            .rules
            .iter()
            .find_map(|(l, c)| {
                local
                    .strip_prefix(l.as_str())
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| format!("{c}{rest}"))
            })
            .ok_or(Unsendable::NoRule)?;
        mqtt::cloud_topic::check_topic(&cloud).map_err(Unsendable::Refused)?;
        Ok(cloud)
    }

    /// The local topic for a cloud one; `None` when no rule matches.
    pub fn to_local(&self, cloud: &str) -> Option<String> {
        self.rules.iter().find_map(|(l, c)| {
            cloud
                .strip_prefix(c.as_str())
                .filter(|rest| !rest.is_empty())
                .map(|rest| format!("{l}{rest}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_round_trips() {
        let m = TopicMap::new(vec![(String::new(), "t1/gw-1/".to_owned())]);
        assert_eq!(
            m.to_cloud("sensors/temp").as_deref(),
            Ok("t1/gw-1/sensors/temp")
        );
        assert_eq!(
            m.to_local("t1/gw-1/cmd/valve").as_deref(),
            Some("cmd/valve")
        );
        assert_eq!(m.to_local("t1/gw-2/cmd/valve"), None);
        assert_eq!(m.to_local("t1/gw-1/"), None);
    }

    #[test]
    fn first_matching_rule_wins() {
        let m = TopicMap::new(vec![
            ("alarms/".to_owned(), "t1/alarms/gw-1/".to_owned()),
            (String::new(), "t1/gw-1/".to_owned()),
        ]);
        assert_eq!(
            m.to_cloud("alarms/fire").as_deref(),
            Ok("t1/alarms/gw-1/fire")
        );
        assert_eq!(m.to_cloud("x").as_deref(), Ok("t1/gw-1/x"));
        assert_eq!(
            m.to_local("t1/alarms/gw-1/ack").as_deref(),
            Some("alarms/ack")
        );
    }

    #[test]
    fn a_device_cannot_smuggle_a_separator_into_a_cloud_topic() {
        let m = TopicMap::new(vec![(String::new(), "t1/gw-1/".to_owned())]);
        for local in ["x,/LMQ/t1/gw-2/cmd/valve", "a%b", "a\u{2}b", "a\nb"] {
            assert!(
                matches!(m.to_cloud(local), Err(Unsendable::Refused(_))),
                "{local:?}"
            );
        }
        let long = "a".repeat(mqtt::cloud_topic::MAX_TOPIC_BYTES);
        assert!(matches!(m.to_cloud(&long), Err(Unsendable::Refused(_))));
        let m = TopicMap::new(vec![("only/".to_owned(), "t1/gw-1/".to_owned())]);
        assert_eq!(m.to_cloud("other"), Err(Unsendable::NoRule));
    }
}
