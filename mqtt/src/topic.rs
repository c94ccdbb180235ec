//! Topic names and filters: validation and matching (MQTT 3.1.1 §4.7, MQTT 5 §4.7).

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Empty.
    Empty,
    /// Longer than 65535 bytes.
    TooLong,
    /// Contains U+0000.
    NulCharacter,
    /// A topic name containing `+` or `#`.
    WildcardInName,
    /// A filter with `+` or `#` not occupying a whole level, or `#` not last.
    MisplacedWildcard,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty topic",
            Self::TooLong => "topic longer than 65535 bytes",
            Self::NulCharacter => "topic contains U+0000",
            Self::WildcardInName => "topic name contains a wildcard",
            Self::MisplacedWildcard => "wildcard does not occupy a whole level",
        })
    }
}

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 65535 {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

/// Checks a topic name used in PUBLISH.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter used in SUBSCRIBE.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let bad_plus = level.contains('+') && *level != "+";
        let bad_hash = level.contains('#') && (*level != "#" || i != last);
        if bad_plus || bad_hash {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Whether a filter contains a wildcard.
pub fn is_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Whether every topic the filter `inner` matches is matched by the filter `outer` too:
/// `inner` is equal to or narrower than `outer` (an ACL allowing `outer` allows a
/// SUBSCRIBE to `inner`). Both must be valid.
pub fn filter_within(inner: &str, outer: &str) -> bool {
    let mut i = inner.split('/');
    let mut o = outer.split('/');
    loop {
        match (i.next(), o.next()) {
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `filter` matches `topic`. Both must be valid. Wildcards at the first level do
/// not match topics starting with `$` (§4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The first level of a topic or filter: everything before the first `/`.
pub fn first_level(topic: &str) -> &str {
    topic.split('/').next().unwrap_or(topic)
}

/// Number of levels.
pub fn depth(topic: &str) -> usize {
    topic.split('/').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("a/b/c").is_ok());
        assert!(validate_name("/").is_ok());
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a\0"), Err(TopicError::NulCharacter));
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/+/c", "a/#", "+/+", "/+", "a//b"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["a/#/c", "a+", "a/b#", "#/a", "++"] {
            assert_eq!(
                validate_filter(bad),
                Err(TopicError::MisplacedWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_within_filters() {
        for (inner, outer) in [("a/b", "a/b"), ("a/b", "a/+"), ("a/+", "a/#"), ("a", "a/#")] {
            assert!(filter_within(inner, outer), "{inner} within {outer}");
        }
        for (inner, outer) in [
            ("a/#", "a/+"),
            ("a/+", "a/b"),
            ("a/b/c", "a/+"),
            ("b", "a/#"),
        ] {
            assert!(!filter_within(inner, outer), "{inner} not within {outer}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/b", "a"));
        assert_eq!(first_level("t1/a/b"), "t1");
        assert_eq!(first_level("t1"), "t1");
        assert_eq!(depth("a/b/c"), 3);
    }
}
