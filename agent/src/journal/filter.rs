//! MQTT topic filters (`+` and `#` wildcards) for the journal's classification rules.
//!
//! Matching follows MQTT 3.1.1 §4.7 / MQTT 5 §4.7: `+` matches exactly one level, `#`
//! (only as the last level) matches the parent level and any number of levels below, and
//! topics starting with `$` are not matched by a filter starting with a wildcard.
//! When the shared `mqtt` crate gains a matcher, this one can be replaced by it.

use std::fmt;

/// One level of a parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`
    One,
    /// `#`
    Rest,
}

/// A validated MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

/// Why a filter string is not a valid MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(&'static str);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FilterError {}

impl TopicFilter {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.is_empty() {
            return Err(FilterError("empty topic filter"));
        }
        if text.contains('\0') {
            return Err(FilterError("topic filter contains NUL"));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::One,
                "#" if i == last => Level::Rest,
                "#" => return Err(FilterError("'#' must be the last level")),
                p if p.contains('#') => {
                    return Err(FilterError("'#' must occupy a whole level"));
                }
                p if p.contains('+') => {
                    return Err(FilterError("'+' must occupy a whole level"));
                }
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: text.to_owned(),
            levels,
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` (a topic name, without wildcards) matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return true,
                Level::One => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match topic_levels.next() {
                    Some(got) if got == want => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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

    #[test]
    fn exact_levels() {
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b", "a"));
        assert!(!m("a/b", "a/c"));
        assert!(m("/a", "/a"));
        assert!(!m("/a", "a"));
        assert!(m("a//b", "a//b"));
    }

    #[test]
    fn single_level_wildcard() {
        assert!(m("a/+/c", "a/b/c"));
        assert!(m("a/+/c", "a//c"));
        assert!(!m("a/+/c", "a/b/d"));
        assert!(!m("a/+", "a/b/c"));
        assert!(m("a/+", "a/"));
        assert!(!m("a/+", "a"));
        assert!(m("+", "a"));
        assert!(!m("+", "a/b"));
        assert!(m("+/+", "/a"));
    }

    #[test]
    fn multi_level_wildcard() {
        assert!(m("#", "a"));
        assert!(m("#", "a/b/c"));
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b"));
        assert!(m("a/#", "a/b/c"));
        assert!(!m("a/#", "b/a"));
        assert!(m("a/+/#", "a/b"));
        assert!(m("a/+/#", "a/b/c/d"));
        assert!(!m("a/+/#", "a"));
    }

    #[test]
    fn dollar_topics_need_explicit_first_level() {
        assert!(!m("#", "$SYS/x"));
        assert!(!m("+/x", "$SYS/x"));
        assert!(m("$SYS/#", "$SYS/x"));
        assert!(m("$SYS/+", "$SYS/x"));
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
