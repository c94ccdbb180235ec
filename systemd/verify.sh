#!/usr/bin/env bash
# Checks systemd/edge-agent.service and systemd/cloud-bridge.service with
# `systemd-analyze verify` (Debian package `systemd`), run by tests/run.sh.
#
#   systemd/verify.sh [BIN_DIR]     BIN_DIR holds the built edge-agent and cloud-bridge
#                                   (default: target/debug)
#
# verify refuses an ExecStart= whose binary does not exist, so the units are checked as
# temp copies with /usr/bin/<name> rewritten to BIN_DIR/<name> (a --root= tree would need
# all of systemd's own units too). verify exits 0 even on an unknown key or a bad value
# (it only prints a warning), so any output at all fails the check.
# It also prints `systemd-analyze security --offline` exposure scores (for information).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin_dir=$(realpath "${1:-target/debug}")

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd/verify.sh: FAILED: systemd-analyze is missing; install Debian's systemd package (apt-get install systemd; tests/setup.sh does)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
units=()
for name in edge-agent cloud-bridge; do
  [[ -x $bin_dir/$name ]] || {
    echo "systemd/verify.sh: FAILED: $bin_dir/$name is not built (cargo build --workspace)" >&2
    exit 1
  }
  grep -q "^ExecStart=/usr/bin/$name " "systemd/$name.service" || {
    echo "systemd/verify.sh: FAILED: systemd/$name.service does not start /usr/bin/$name" >&2
    exit 1
  }
  sed "s|=/usr/bin/$name |=$bin_dir/$name |" "systemd/$name.service" >"$tmp/$name.service"
  units+=("$tmp/$name.service")
done
out=$(systemd-analyze verify --man=no "${units[@]}" 2>&1) && rc=0 || rc=$?
if ((rc != 0)) || [[ -n $out ]]; then
  echo "$out" >&2
  echo "systemd/verify.sh: FAILED: systemd-analyze verify (exit $rc) found the problems above" >&2
  exit 1
fi
for u in "${units[@]}"; do
  systemd-analyze security --offline=yes --no-pager "$u" 2>/dev/null | grep 'Overall exposure' || true
done
echo "systemd/verify.sh: ok: edge-agent.service and cloud-bridge.service pass systemd-analyze verify"
