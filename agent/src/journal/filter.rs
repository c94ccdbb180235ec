//! Topic filters of the journal's classification rules: a validated filter string, matched
//! with the shared MQTT implementation (`mqtt::topic`, MQTT 3.1.1/5 §4.7): `+` matches
//! one level, a trailing `#` the parent level and everything below, and a wildcard first
//! level does not match topics starting with `$`.

use std::fmt;

/// Why a filter string is not a valid MQTT topic filter.
pub type FilterError = mqtt::topic::TopicError;

/// A validated MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        mqtt::topic::validate_filter(text)?;
        Ok(TopicFilter(text.to_owned()))
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` (a topic name, without wildcards) matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        mqtt::topic::matches(&self.0, topic)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        match TopicFilter::parse(filter) {
            Ok(f) => f.matches(topic),
            Err(e) => panic!("{filter}: {e}"),
        }
    }

    /// The cases the journal's rules rely on.
    #[test]
    fn rule_matching() {
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(m("a/+/c", "a/b/c"));
        assert!(m("a/+/c", "a//c"));
        assert!(!m("a/+", "a/b/c"));
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b/c"));
        assert!(!m("a/#", "b/a"));
        assert!(m("a/+/#", "a/b/c/d"));
        assert!(!m("#", "$SYS/x"));
        assert!(!m("+/x", "$SYS/x"));
        assert!(m("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        for bad in ["", "a/#/b", "a#", "#a", "a/b+", "+a/b", "a\0b", "##"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["#", "+", "a/+/#", "/", "+/+", "$SYS/#"] {
            assert!(TopicFilter::parse(good).is_ok(), "{good:?} refused");
        }
    }
}
