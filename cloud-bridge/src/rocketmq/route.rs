//! What the name server says about topics and brokers: topic routes and cluster info, and
//! the repair of the Java name server's not-quite-JSON.
//!
//! The Java name server serializes with fastjson, which writes maps with integer keys
//! without quotes: `"brokerAddrs":{0:"127.0.0.1:10911"}`. [`quote_integer_keys`] quotes
//! such keys before the text reaches serde_json; standard JSON passes through untouched
//! (and without a copy).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::Error;

/// Queue permissions (`PermName` of the Java code).
pub mod perm {
    /// Priority flag (unused by clients).
    pub const PRIORITY: u32 = 0x1 << 3;
    /// Consumers may read.
    pub const READ: u32 = 0x1 << 2;
    /// Producers may write.
    pub const WRITE: u32 = 0x1 << 1;
    /// Inherited by topics auto-created from this one.
    pub const INHERIT: u32 = 0x1;
    /// Read and write: what topics are created with.
    pub const READ_WRITE: u32 = READ | WRITE;
}

/// The broker id of a master.
pub const MASTER_ID: i64 = 0;

/// The route of a topic: which brokers hold it, and how many queues each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TopicRoute {
    /// The brokers (master and slaves by broker name) that hold the topic.
    #[serde(rename = "brokerDatas", default)]
    pub brokers: Vec<BrokerData>,
    /// The topic's queues on each broker.
    #[serde(rename = "queueDatas", default)]
    pub queues: Vec<QueueData>,
}

/// One broker set: a master and its slaves, sharing a broker name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// The cluster the broker belongs to.
    #[serde(default)]
    pub cluster: String,
    /// The broker name.
    pub broker_name: String,
    /// Addresses (`host:port`) by broker id; id 0 is the master.
    #[serde(default)]
    pub broker_addrs: BTreeMap<i64, String>,
}

impl BrokerData {
    /// The master's address.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }
}

/// A topic's queues on one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// The broker name.
    pub broker_name: String,
    /// Number of queues consumers read.
    pub read_queue_nums: u32,
    /// Number of queues producers write.
    pub write_queue_nums: u32,
    /// [`perm`] bits.
    pub perm: u32,
    /// Topic system flags.
    #[serde(default)]
    pub topic_sys_flag: u32,
}

impl QueueData {
    /// Whether producers may write.
    pub fn is_writable(&self) -> bool {
        self.perm & perm::WRITE != 0
    }

    /// Whether consumers may read.
    pub fn is_readable(&self) -> bool {
        self.perm & perm::READ != 0
    }
}

impl TopicRoute {
    /// The broker set named `broker_name`.
    pub fn broker(&self, broker_name: &str) -> Option<&BrokerData> {
        self.brokers.iter().find(|b| b.broker_name == broker_name)
    }

    /// Master addresses of the brokers whose queues are readable (where to pull LMQs from).
    pub fn readable_masters(&self) -> Vec<(&str, &str)> {
        let mut masters: Vec<(&str, &str)> = self
            .queues
            .iter()
            .filter(|q| q.is_readable())
            .filter_map(|q| {
                let broker = self.broker(&q.broker_name)?;
                Some((broker.broker_name.as_str(), broker.master_addr()?))
            })
            .collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }
}

/// Every cluster and broker a name server knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterInfo {
    /// Broker sets by broker name.
    #[serde(rename = "brokerAddrTable", default)]
    pub brokers: HashMap<String, BrokerData>,
    /// Broker names by cluster name.
    #[serde(rename = "clusterAddrTable", default)]
    pub clusters: HashMap<String, Vec<String>>,
}

impl ClusterInfo {
    /// Master addresses of every broker of `cluster`, sorted.
    pub fn master_addrs(&self, cluster: &str) -> Vec<&str> {
        let mut addrs: Vec<&str> = self
            .clusters
            .get(cluster)
            .into_iter()
            .flatten()
            .filter_map(|name| self.brokers.get(name)?.master_addr())
            .collect();
        addrs.sort_unstable();
        addrs
    }
}

/// Parses a name server JSON body (with [`quote_integer_keys`] applied first).
pub fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, Error> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::Protocol(format!("{what} is not UTF-8")))?;
    serde_json::from_str(&quote_integer_keys(text))
        .map_err(|e| Error::Protocol(format!("cannot parse {what}: {e}")))
}

/// Quotes the bare integer object keys fastjson writes (`{0:"a"}` -> `{"0":"a"}`),
/// leaving string contents and everything else untouched.
pub fn quote_integer_keys(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut containers: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                expect_key = false;
            }
            b'{' => {
                containers.push(b'{');
                expect_key = true;
            }
            b'[' => {
                containers.push(b'[');
                expect_key = false;
            }
            b'}' | b']' => {
                containers.pop();
                expect_key = false;
            }
            b',' => expect_key = containers.last() == Some(&b'{'),
            b'-' | b'0'..=b'9' if expect_key => {
                let start = i;
                let mut end = i + 1;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let mut after = end;
                while after < bytes.len() && bytes[after].is_ascii_whitespace() {
                    after += 1;
                }
                if bytes.get(after) == Some(&b':') {
                    let out = out.get_or_insert_with(|| String::with_capacity(json.len() + 16));
                    out.push_str(&json[copied..start]);
                    out.push('"');
                    out.push_str(&json[start..end]);
                    out.push('"');
                    copied = end;
                }
                expect_key = false;
                i = end;
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => expect_key = false,
        }
        i += 1;
    }
    match out {
        Some(mut out) => {
            out.push_str(&json[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn quotes_bare_integer_keys_only() {
        let cases = [
            (r#"{0:"a",1:"b"}"#, r#"{"0":"a","1":"b"}"#),
            (r#"{ 0 : "a" , -1:"b"}"#, r#"{ "0" : "a" , "-1":"b"}"#),
            (r#"{"m":{12:{3:[1,2]}}}"#, r#"{"m":{"12":{"3":[1,2]}}}"#),
            (r#"{"s":"{0:\"x\",1:y}"}"#, r#"{"s":"{0:\"x\",1:y}"}"#),
            (r#"[1,{2:3},4]"#, r#"[1,{"2":3},4]"#),
            (r#"{"a":1,"b":[0,1]}"#, r#"{"a":1,"b":[0,1]}"#),
        ];
        for (input, expected) in cases {
            assert_eq!(quote_integer_keys(input), expected, "{input}");
        }
        assert!(matches!(
            quote_integer_keys(r#"{"0":"x"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn parses_fastjson_route() -> TestResult {
        let body = br#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:20911",1:"127.0.0.1:20921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false},{"brokerAddrs":{1:"10.0.0.9:10911"},"brokerName":"broker-b","cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-b","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4},{"brokerName":"broker-a","perm":4,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8}]}"#;
        let route: TopicRoute = parse_json(body, "route")?;
        assert_eq!(route.brokers.len(), 2);
        let a = route.broker("broker-a").ok_or("broker-a")?;
        assert_eq!(a.master_addr(), Some("127.0.0.1:20911"));
        assert_eq!(
            a.broker_addrs.get(&1).map(String::as_str),
            Some("127.0.0.1:20921")
        );
        assert_eq!(route.queues[1].read_queue_nums, 8);
        assert!(!route.queues[1].is_writable() && route.queues[1].is_readable());
        // broker-b has no master: not a place to pull from.
        assert_eq!(
            route.readable_masters(),
            vec![("broker-a", "127.0.0.1:20911")]
        );
        Ok(())
    }

    #[test]
    fn parses_cluster_info() -> TestResult {
        let body = br#"{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"127.0.0.1:20911"},"brokerName":"broker-a","cluster":"C"}},"clusterAddrTable":{"C":["broker-a","gone"]}}"#;
        let info: ClusterInfo = parse_json(body, "cluster info")?;
        assert_eq!(info.master_addrs("C"), vec!["127.0.0.1:20911"]);
        assert!(info.master_addrs("other").is_empty());
        assert!(parse_json::<ClusterInfo>(b"{0:", "x").is_err());
        Ok(())
    }
}
