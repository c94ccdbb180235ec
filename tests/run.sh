#!/usr/bin/env bash
# The project's test command (see README): starts the shared test RocketMQ (name server +
# broker, tests/rocketmq/rocketmq.sh; no-op when already running), exports its addresses
# (ROCKETMQ_NAMESRV, ROCKETMQ_BROKER, ROCKETMQ_CLUSTER, ROCKETMQ_BROKER_NAME), then runs
# fmt, clippy and the tests of the whole workspace, then `systemd-analyze verify` of the units
# (systemd/verify.sh). Extra arguments go to `cargo test`.
# The broker is left running for the next run; `tests/run.sh --stop [args]` stops it at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stop=0
if [[ ${1:-} == --stop ]]; then stop=1; shift; fi

rmq=tests/rocketmq/rocketmq.sh
"$rmq" install
"$rmq" start
set -a
# shellcheck disable=SC1091
source tests/rocketmq/run/env
set +a
echo "RocketMQ: namesrv $ROCKETMQ_NAMESRV, broker $ROCKETMQ_BROKER ($ROCKETMQ_CLUSTER/$ROCKETMQ_BROKER_NAME)"
# The broker refuses every send once its disk is 90% full (diskMaxUsedSpaceRatio and the
# 5.x disk-full check): say so here, instead of letting dozens of tests fail on a refusal.
used=$(df --output=pcent tests/rocketmq/run | tail -1 | tr -dc 0-9)
if ((used >= 88)); then
  echo "tests/run.sh: the disk holding tests/rocketmq/run is ${used}% full, and RocketMQ" \
    "refuses sends from 90%: free space first (target/debug/incremental is often large)" >&2
  exit 1
fi
if ((stop)); then trap '"$rmq" stop' EXIT; fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets "$@"
# The systemd units, against the binaries the tests just built (fails if systemd-analyze
# is missing: .ci/run installs Debian's systemd package).
systemd/verify.sh target/debug
