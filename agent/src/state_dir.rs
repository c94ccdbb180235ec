//! Where the agent keeps its data: `journal.db` (the uplink journal) and `broker.db`
//! (persistent sessions, their offline queues, retained messages).
//!
//! The first that applies wins:
//! 1. `--state-dir DIR` on the command line (or the config file's value);
//! 2. `$STATE_DIRECTORY`, set by systemd for a unit with `StateDirectory=edge-agent`
//!    (if it lists several directories separated by `:`, the first);
//! 3. `/var/lib/edge-agent`, if it is a writable directory or can be created there
//!    (`/var/lib` writable, i.e. running as root);
//! 4. `$XDG_STATE_HOME/edge-agent`, if `XDG_STATE_HOME` is set to an absolute path;
//! 5. `$HOME/.local/state/edge-agent`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The system-wide default.
pub const SYSTEM_DIR: &str = "/var/lib/edge-agent";
/// The directory name under the XDG state home.
pub const APP_DIR: &str = "edge-agent";

/// Resolves the state directory from the process environment (see the module doc).
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    resolve_with(explicit, |k| std::env::var_os(k), writable)
}

/// [`resolve`] with the environment and the writability test injected.
pub fn resolve_with(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    is_writable: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dirs) = env("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !first.is_empty() {
            return Ok(PathBuf::from(first));
        }
    }
    let system = Path::new(SYSTEM_DIR);
    let creatable = |p: &Path| !p.exists() && p.parent().is_some_and(&is_writable);
    if (system.is_dir() && is_writable(system)) || creatable(system) {
        return Ok(system.to_path_buf());
    }
    if let Some(xdg) = env("XDG_STATE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join(APP_DIR));
    }
    if let Some(home) = env("HOME").map(PathBuf::from)
        && home.is_absolute()
    {
        return Ok(home.join(".local/state").join(APP_DIR));
    }
    Err(Error::StateDir(
        "set --state-dir, STATE_DIRECTORY or HOME (/var/lib/edge-agent is not writable)".to_owned(),
    ))
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn explicit_wins() {
        let r = resolve_with(
            Some(Path::new("/x")),
            env_of(&[("STATE_DIRECTORY", "/s")]),
            |_| true,
        );
        assert_eq!(r.expect("dir"), PathBuf::from("/x"));
    }

    #[test]
    fn systemd_state_directory_first_entry() {
        let r = resolve_with(None, env_of(&[("STATE_DIRECTORY", "/s1:/s2")]), |_| true);
        assert_eq!(r.expect("dir"), PathBuf::from("/s1"));
    }

    #[test]
    fn falls_back_to_xdg_then_home_when_var_lib_is_not_writable() {
        let env = env_of(&[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]);
        let r = resolve_with(None, env, |_| false);
        assert_eq!(r.expect("dir"), PathBuf::from("/xdg/edge-agent"));
        let r = resolve_with(
            None,
            env_of(&[("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")]),
            |_| false,
        );
        assert_eq!(
            r.expect("dir"),
            PathBuf::from("/home/u/.local/state/edge-agent")
        );
        assert!(resolve_with(None, env_of(&[]), |_| false).is_err());
    }

    #[test]
    fn var_lib_when_writable() {
        let r = resolve_with(None, env_of(&[("HOME", "/home/u")]), |_| true);
        assert_eq!(r.expect("dir"), PathBuf::from(SYSTEM_DIR));
    }
}
