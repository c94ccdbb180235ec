//! `tests/setup.sh`, the step both README commands run first, in scratch `PATH`s: nothing
//! is really installed. The tools it looks for are absent or are stub scripts; `apt-get`,
//! `sudo` and `python3 -m pip` are stubs that write down how they were called.
//! - without any of the tools, `--dry-run` names every package it would install;
//! - without them and without `apt-get`, it says which packages it cannot install, fails;
//! - with every tool there, it installs nothing;
//! - with a JDK 11 and no paho-mqtt, it runs `apt-get install openjdk-17-jdk-headless`
//!   and `pip install paho-mqtt==2.*`, and nothing else.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch `PATH` directory, with only `readlink` (which the script uses) from the
/// machine, and a log that the stubs append their command lines to.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let readlink = ["/usr/bin/readlink", "/bin/readlink"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("coreutils readlink");
        symlink(readlink, dir.path().join("bin/readlink")).unwrap();
        Self { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// A stub command: logs `name args` and runs `body` (bash).
    fn stub(&self, name: &str, body: &str) {
        let path = self.bin().join(name);
        let log = self.log();
        let text = format!(
            "#!/bin/bash\necho \"{name} $*\" >>'{}'\n{body}\n",
            log.display()
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A JDK of `version` whose `javac` is on the scratch PATH (through a symlink, as
    /// Debian's alternatives do).
    fn jdk(&self, version: &str) {
        let home = self.dir.path().join(format!("jdk-{version}"));
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::write(
            home.join("release"),
            format!("IMPLEMENTOR=\"test\"\nJAVA_VERSION=\"{version}\"\n"),
        )
        .unwrap();
        let javac = home.join("bin/javac");
        std::fs::write(&javac, "#!/bin/bash\necho should not run >&2; exit 1\n").unwrap();
        std::fs::set_permissions(&javac, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&javac, self.bin().join("javac")).unwrap();
    }

    /// `sudo -n CMD...` runs CMD (for a test run by a user that is not root).
    fn sudo(&self) {
        self.stub("sudo", "[[ $1 == -n ]] && shift; exec \"$@\"");
    }

    /// Runs `tests/setup.sh args` with only the scratch directory on PATH.
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let started = std::time::Instant::now();
        let out = Command::new("/bin/bash")
            .arg(test_support::repo_root().join("tests/setup.sh"))
            .args(args)
            .env_clear()
            .env("PATH", self.bin())
            .env("HOME", self.dir.path())
            .output()
            .expect("run tests/setup.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        println!(
            "tests/setup.sh {args:?}: {:?} in {:?}\n{stdout}{stderr}",
            out.status.code(),
            started.elapsed()
        );
        (out.status.code(), stdout, stderr)
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

const ALL_DEBS: &str =
    "mosquitto-clients openssl openjdk-17-jdk-headless maven systemd python3 python3-pip";

#[test]
fn dry_run_on_a_bare_path_names_every_package_and_installs_nothing() {
    let s = Scratch::new();
    s.stub("apt-get", "exit 0");
    let (code, out, err) = s.run(&["--dry-run"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "missing: mosquitto_sub openssl java 17 mvn systemd-analyze python3 paho-mqtt"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("would install Debian packages: {ALL_DEBS}")),
        "{out}"
    );
    assert!(
        out.contains("would install Python package: paho-mqtt==2.*"),
        "{out}"
    );
    assert_eq!(s.calls(), "", "a dry run called a package manager");
}

#[test]
fn without_apt_get_it_names_what_it_cannot_install_and_fails() {
    let s = Scratch::new();
    let (code, out, err) = s.run(&[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("cannot install: packages {ALL_DEBS} (no apt-get")),
        "{err}"
    );
    assert!(err.contains("paho-mqtt==2.*"), "{err}");
}

#[test]
fn with_everything_there_it_installs_nothing() {
    let s = Scratch::new();
    for tool in [
        "mosquitto_pub",
        "mosquitto_sub",
        "openssl",
        "mvn",
        "systemd-analyze",
        "cargo",
    ] {
        s.stub(tool, "exit 0");
    }
    s.jdk("17.0.15");
    s.stub("python3", "exit 0"); // `import paho.mqtt` of a 2.x version succeeds
    s.stub("apt-get", "exit 0");
    s.sudo();
    let (code, out, err) = s.run(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing to install"), "{out}");
    assert!(out.contains("java 17"), "{out}");
    let calls = s.calls();
    assert!(
        !calls.contains("apt-get") && !calls.contains("pip"),
        "{calls}"
    );
}

#[test]
fn an_old_jdk_and_a_missing_paho_are_installed_and_nothing_else() {
    let s = Scratch::new();
    for tool in [
        "mosquitto_pub",
        "mosquitto_sub",
        "openssl",
        "mvn",
        "systemd-analyze",
        "cargo",
    ] {
        s.stub(tool, "exit 0");
    }
    s.jdk("11.0.2");
    // python3: paho-mqtt is importable only once pip installed it.
    let marker = s.dir.path().join("paho-installed");
    s.stub(
        "python3",
        &format!(
            "case \"$1 $2\" in\n  '-m pip') [[ $3 == install ]] && : >'{m}'; exit 0 ;;\n  *) [[ -e '{m}' ]] ;;\nesac",
            m = marker.display()
        ),
    );
    s.stub("apt-get", "exit 0");
    s.sudo();
    let (code, out, err) = s.run(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("missing: java 17 (javac is 11) paho-mqtt"),
        "{out}"
    );
    assert!(
        out.contains("installing Debian packages: openjdk-17-jdk-headless\n"),
        "{out}"
    );
    assert!(
        out.contains("installing Python package: paho-mqtt==2.*"),
        "{out}"
    );
    let calls = s.calls();
    assert!(
        calls.contains("apt-get install -y -q --no-install-recommends openjdk-17-jdk-headless\n"),
        "{calls}"
    );
    assert!(
        calls.contains("python3 -m pip install -q paho-mqtt==2.*"),
        "{calls}"
    );
    assert_eq!(
        calls.matches("apt-get install").count(),
        1,
        "one apt-get install: {calls}"
    );
}
