//! A child process whose stderr log is read on a thread: every line kept (and, when asked,
//! every line above INFO echoed to the test's stderr), and the addresses it announces
//! (`... addr=127.0.0.1:PORT`, as `edge-agent` logs its listeners) read from it. Used
//! where a server binds port 0 and the test learns the port from its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The running child and its log.
#[derive(Debug)]
pub struct Logged {
    pub child: Child,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    announced: mpsc::Receiver<String>,
    /// Announcing lines read from `announced` and not yet asked for.
    unclaimed: Vec<String>,
}

impl Logged {
    /// Spawns `cmd` with stderr piped (stdin and stdout null); with `echo`, its lines
    /// that are not at INFO level go to the test's stderr, prefixed with `name`.
    pub fn spawn(name: &str, cmd: &mut Command, echo: bool) -> Logged {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, announced) = mpsc::channel();
        let lines = log.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo && !line.contains(" INFO ") {
                    eprintln!("{name}: {line}");
                }
                if line.contains("addr=") {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        Logged {
            child,
            log,
            announced,
            unclaimed: Vec::new(),
        }
    }

    /// The address announced by the first line that contains `marker` and `addr=`
    /// (`addr=Some(…)` too), waiting up to `within` for it.
    pub fn addr(&mut self, marker: &str, within: Duration) -> SocketAddr {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.unclaimed.iter().position(|l| l.contains(marker)) {
                let line = self.unclaimed.remove(i);
                let a = line.split("addr=").nth(1).unwrap_or_default();
                let a = a.split_whitespace().next().unwrap_or_default();
                let a = a.trim_start_matches("Some(").trim_end_matches(')');
                return a
                    .parse()
                    .unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.announced.recv_timeout(left) {
                Ok(line) => self.unclaimed.push(line),
                Err(e) => panic!("no {marker:?} line with an address within {within:?}: {e}"),
            }
        }
    }

    /// How many log lines so far contain `needle`.
    pub fn lines_with(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}
