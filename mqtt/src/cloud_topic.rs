//! What topics, filters and client identifiers must not contain to be carried by RocketMQ
//! in the rocketmq-mqtt layout (Light Message Queues). MQTT allows almost any UTF-8 in
//! them; RocketMQ parses some characters as structure and turns names into file names, so
//! an unchecked name is an injection into another client's queues or a wedge for the
//! broker. Both servers apply these rules: cloud-bridge at every entry point (PUBLISH,
//! SUBSCRIBE, wills, retained messages, `wildcard add`, its configuration) and edge-agent
//! to the cloud topics of its uplink map, so that a local device cannot smuggle a
//! separator into a cloud topic. They live in this shared crate because both need them;
//! nothing else here knows about RocketMQ.
//!
//! | rule | why (RocketMQ 5.3.3 and rocketmq-mqtt) |
//! |---|---|
//! | no `,` | the broker splits `INNER_MULTI_DISPATCH` and `INNER_MULTI_QUEUE_OFFSET` on `,` (`MixAll.LMQ_DISPATCH_SEPARATOR`): a comma makes one LMQ name two, so a publish reaches a queue outside the publisher's ACL, and an empty element stops the broker's dispatch of every LMQ (`NumberFormatException` in `ConsumeQueue.multiDispatchLmqQueue`). kvconfig lists (`ALL_FIRST_TOPICS`, wildcard lists) are comma lists too |
//! | no `%` | the LMQ name replaces `/` with `%` and escapes nothing: `a%b` and `a/b` would share a queue |
//! | no control characters (U+0001..U+001F, U+007F..U+009F) | U+0001 and U+0002 separate a RocketMQ message's properties (name U+0001 value U+0002), and the topic travels in `originMqttTopic`; MQTT 5 §1.5.4 says names SHOULD NOT contain any of them, and they end up in file names and logs |
//! | at most [`MAX_TOPIC_BYTES`] bytes | the LMQ name (`%LMQ%` + name + `%`) is a directory name in the broker's store (`consumequeue/{lmq}/0/`): over 255 bytes the broker fails with "File name too long" on every dispatch and stops dispatching every LMQ (seen on 5.3.3) |
//!
//! Client identifiers name queues too (`%LMQ%%p2p%{id}%`, `%LMQ%%retry%{id}%`), offset
//! groups (`%LMQ%{id}`, stored by the broker under `{lmq}@{group}`), kvconfig keys, and
//! they fill `{client}` in ACL filters. On top of the rules above they must not contain
//! `/` (a path in the broker's store; a level in `{client}`), `+` or `#` (`{client}` must
//! never expand to a wildcard), and they are at most [`MAX_CLIENT_ID_BYTES`] bytes
//! (`%LMQ%%retry%` + id + `%` within 255). With `%` refused, `{lmq}@%LMQ%{id}` splits one
//! way only, so `@` (common in cloud MQTT client ids) stays allowed.

/// Longest topic or filter: its LMQ name `%LMQ%{name}%` must fit a 255-byte file name.
pub const MAX_TOPIC_BYTES: usize = 255 - "%LMQ%".len() - 1;

/// Longest client identifier: its retry queue `%LMQ%%retry%{id}%` must fit a 255-byte
/// file name.
pub const MAX_CLIENT_ID_BYTES: usize = 255 - "%LMQ%%retry%".len() - 1;

/// Why a name cannot be carried by RocketMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudNameError {
    /// A character RocketMQ reads as structure or that collides in LMQ names.
    Forbidden(char),
    /// A control character.
    Control(char),
    /// Longer than the limit, in bytes.
    TooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty (client identifiers only; MQTT refuses empty topics itself).
    Empty,
}

impl std::fmt::Display for CloudNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Forbidden(c) => write!(
                f,
                "{c:?} is not allowed: RocketMQ uses it as a separator or it collides in LMQ names"
            ),
            Self::Control(c) => write!(f, "control character {c:?} is not allowed"),
            Self::TooLong { len, max } => {
                write!(f, "{len} bytes, more than the {max} that RocketMQ can name")
            }
            Self::Empty => f.write_str("empty"),
        }
    }
}

/// Characters refused in topics and filters.
pub const FORBIDDEN_IN_TOPICS: [char; 2] = [',', '%'];

/// Characters refused in client identifiers (besides the topic ones and controls).
pub const FORBIDDEN_IN_CLIENT_IDS: [char; 5] = [',', '%', '/', '+', '#'];

fn is_control(c: char) -> bool {
    c.is_control()
}

fn check_chars(name: &str, forbidden: &[char]) -> Result<(), CloudNameError> {
    for c in name.chars() {
        if forbidden.contains(&c) {
            return Err(CloudNameError::Forbidden(c));
        }
        if is_control(c) {
            return Err(CloudNameError::Control(c));
        }
    }
    Ok(())
}

/// Checks a topic name or filter (already valid MQTT) for RocketMQ.
pub fn check_topic(name: &str) -> Result<(), CloudNameError> {
    if name.len() > MAX_TOPIC_BYTES {
        return Err(CloudNameError::TooLong {
            len: name.len(),
            max: MAX_TOPIC_BYTES,
        });
    }
    check_chars(name, &FORBIDDEN_IN_TOPICS)
}

/// Checks a client identifier for RocketMQ, with a configured length limit (capped at
/// [`MAX_CLIENT_ID_BYTES`]).
pub fn check_client_id(id: &str, max_len: usize) -> Result<(), CloudNameError> {
    if id.is_empty() {
        return Err(CloudNameError::Empty);
    }
    let max = max_len.min(MAX_CLIENT_ID_BYTES);
    if id.len() > max {
        return Err(CloudNameError::TooLong { len: id.len(), max });
    }
    check_chars(id, &FORBIDDEN_IN_CLIENT_IDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_separator_and_control_is_refused_in_topics() {
        for c in [',', '%', '\u{1}', '\u{2}', '\n', '\t', '\u{7f}', '\u{85}'] {
            let topic = format!("t1/a{c}b");
            assert!(check_topic(&topic).is_err(), "{topic:?}");
        }
        for ok in [
            "t1/a/b",
            "t1/+/#",
            "t1/ä b/@x",
            "t1//",
            "t1/p2p/dev-9",
            "t1/a.b/..",
            "t1",
        ] {
            assert_eq!(check_topic(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn length_limit_is_the_file_name_limit() {
        let at = format!("t1/{}", "a".repeat(MAX_TOPIC_BYTES - 3));
        assert_eq!(format!("%LMQ%{at}%").len(), 255);
        assert_eq!(check_topic(&at), Ok(()));
        assert!(matches!(
            check_topic(&format!("{at}b")),
            Err(CloudNameError::TooLong { .. })
        ));
        // Bytes, not characters.
        let wide = format!("t1/{}", "é".repeat(MAX_TOPIC_BYTES / 2));
        assert!(check_topic(&wide).is_err());
        assert_eq!(
            format!("%LMQ%%retry%{}%", "c".repeat(MAX_CLIENT_ID_BYTES)).len(),
            255
        );
    }

    #[test]
    fn client_ids() {
        assert_eq!(check_client_id("GID_a@@@dev-1", 128), Ok(()));
        assert_eq!(check_client_id("", 128), Err(CloudNameError::Empty));
        for c in [',', '%', '/', '+', '#', '\u{1}', '\n'] {
            assert!(check_client_id(&format!("a{c}b"), 128).is_err(), "{c:?}");
        }
        assert!(check_client_id(&"c".repeat(129), 128).is_err());
        assert!(check_client_id(&"c".repeat(129), 1000).is_ok());
        assert!(check_client_id(&"c".repeat(MAX_CLIENT_ID_BYTES + 1), 1000).is_err());
    }
}
