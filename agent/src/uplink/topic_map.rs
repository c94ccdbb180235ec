//! Local ↔ cloud topic names: prefix rules, first match wins. Uplink: a local topic that
//! starts with a rule's `local` prefix becomes `cloud` + the rest (default rule: every
//! topic gets `{first}/{gateway}/` in front). Downlink: the reverse, a cloud topic that
//! starts with a rule's `cloud` prefix becomes `local` + the rest.

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

    /// The cloud topic for a local one; `None` when no rule matches (the uplink then
    /// removes the entry from the journal unsent, counted as `unmapped`).
    pub fn to_cloud(&self, local: &str) -> Option<String> {
        self.rules.iter().find_map(|(l, c)| {
            local
                .strip_prefix(l.as_str())
                .filter(|rest| !rest.is_empty())
                .map(|rest| format!("{c}{rest}"))
        })
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
            Some("t1/gw-1/sensors/temp")
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
            Some("t1/alarms/gw-1/fire")
        );
        assert_eq!(m.to_cloud("x").as_deref(), Some("t1/gw-1/x"));
        assert_eq!(
            m.to_local("t1/alarms/gw-1/ack").as_deref(),
            Some("alarms/ack")
        );
    }
}
