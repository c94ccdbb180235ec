#!/usr/bin/env bash
# The project's test command (see README): installs what is missing (tests/setup.sh),
# starts the shared test RocketMQ (name server + broker, tests/rocketmq/rocketmq.sh; no-op
# when already running), exports its addresses (ROCKETMQ_NAMESRV, ROCKETMQ_BROKER,
# ROCKETMQ_CLUSTER, ROCKETMQ_BROKER_NAME), then runs fmt, clippy and every test binary of
# the workspace (`--no-fail-fast`: one failing binary does not hide the others), then
# `systemd-analyze verify` of the units (systemd/verify.sh). Extra arguments go to
# `cargo test`. The last line sums it up: tests passed and failed, the failed tests by
# target, and the failed steps; the full output is in target/tests-run.log.
# The broker (and rocketmq-mqtt, which the interop suite starts) is left running for the
# next run; `tests/run.sh --stop [args]` stops them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tests/setup.sh

stop=0
if [[ ${1:-} == --stop ]]; then stop=1; shift; fi

rmq=tests/rocketmq/rocketmq.sh
"$rmq" install
"$rmq" start
# The instance's addresses (another instance when ROCKETMQ_NAMESRV_PORT/_BROKER_PORT are set).
set -a
# shellcheck disable=SC1090
source <("$rmq" env)
set +a
echo "RocketMQ: namesrv $ROCKETMQ_NAMESRV, broker $ROCKETMQ_BROKER ($ROCKETMQ_CLUSTER/$ROCKETMQ_BROKER_NAME)"
# The broker refuses every send once its disk is 90% full (diskMaxUsedSpaceRatio and the
# 5.x disk-full check): say so here, instead of letting dozens of tests fail on a refusal.
used=$(df --output=pcent tests/rocketmq | tail -1 | tr -dc 0-9)
if ((used >= 88)); then
  echo "tests/run.sh: the disk holding tests/rocketmq/run is ${used}% full, and RocketMQ" \
    "refuses sends from 90%: free space first (target/debug/incremental is often large)" >&2
  exit 1
fi
# Apache rocketmq-mqtt, the reference peer of cloud-bridge's interop suite
# (cloud-bridge/tests/rocketmq_mqtt.rs): built once from source with Maven (2-4 minutes,
# skipped when cached); the suite starts it. Exit 4: Maven Central is unreachable, and the
# suite says SKIPPED.
peer=tests/peers/rocketmq-mqtt.sh
peer_status=0
"$peer" install || peer_status=$?
if ((peer_status == 4)); then
  echo "tests/run.sh: rocketmq-mqtt not built (Maven Central unreachable): its interop tests will be skipped"
elif ((peer_status != 0)); then
  echo "tests/run.sh: building rocketmq-mqtt failed (exit $peer_status)" >&2
fi
if ((stop)); then trap '"$peer" stop; "$rmq" cluster stop; "$rmq" stop' EXIT; fi

failed_steps=()
((peer_status == 0 || peer_status == 4)) || failed_steps+=("tests/peers/rocketmq-mqtt.sh install")
cargo fmt --all --check || failed_steps+=("cargo fmt")
cargo clippy --workspace --all-targets -- -D warnings || failed_steps+=("cargo clippy")
mkdir -p target
log=target/tests-run.log
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
set -e
# The systemd units, against the binaries the tests just built (systemd-analyze comes
# with Debian's systemd package, which tests/setup.sh installs).
systemd/verify.sh target/debug || failed_steps+=("systemd/verify.sh")

# One line: libtest prints `test NAME ... FAILED` and `test result: ... N passed; M failed`
# per binary; cargo then prints `error: test failed, to rerun pass `-p CRATE --test BIN``
# (also for a binary that crashed before its result line).
summary=$(awk '
  /^ +Running / { names = "" }
  /^test .* \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); names = names (names == "" ? "" : ", ") $0 }
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed/) passed += $i
      if ($(i + 1) ~ /^failed/) failed += $i
    }
  }
  /^error: test failed, to rerun pass / {
    target = $0; sub(/.*to rerun pass `/, "", target); sub(/`.*/, "", target)
    if (names == "") { names = "crashed or did not run"; failed += 1 }
    list = list (list == "" ? "" : "; ") target " (" names ")"
    names = ""
  }
  END { printf "%d passed, %d failed", passed, failed; if (list != "") printf ": %s", list }
' "$log")
if ((test_status != 0)) && [[ $summary == "0 passed, 0 failed" ]]; then
  failed_steps+=("cargo test (build failed, see $log)")
fi
if ((${#failed_steps[@]})); then
  steps=$(printf '%s, ' "${failed_steps[@]}")
  summary="$summary; failed steps: ${steps%, }"
fi
echo "tests/run.sh: $summary"
((test_status == 0 && ${#failed_steps[@]} == 0))
