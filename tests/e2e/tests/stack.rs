//! The README's first command, `tests/stack.sh`, brings the whole pipeline up on one
//! machine and shows both directions working. Run here with `--once` (and the debug
//! binaries the test build already made), so that command keeps working.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

#[test]
fn the_one_machine_stack_shows_both_directions() {
    let root = test_support::repo_root();
    let bins = e2e::bin("edge-agent");
    let bin_dir = bins.parent().expect("target dir");
    e2e::bin("cloud-bridge");
    let out = Command::new(root.join("tests/stack.sh"))
        .arg("--once")
        .env("STACK_BIN_DIR", bin_dir)
        .current_dir(&root)
        .output()
        .expect("tests/stack.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/stack.sh --once failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("RocketMQ got t1/demo-gw/sensors/sim-1 key demo-gw:"),
        "{stdout}"
    );
    assert!(stdout.contains("device got: cmd/valve open"), "{stdout}");
}
