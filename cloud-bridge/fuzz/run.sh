#!/usr/bin/env bash
# Runs a fuzz target of cloud-bridge on stable Rust, without cargo-fuzz: the same
# instrumentation cargo-fuzz uses with `--sanitizer none` (coverage counters for
# libFuzzer), then libFuzzer on the corpus kept in the repo (new finds are added to it).
#
#   cloud-bridge/fuzz/run.sh [TARGET] [SECONDS]     default: cloud_names 60
#   cloud-bridge/fuzz/run.sh cloud_names 0          replay the corpus only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target="${1:-cloud_names}"
seconds="${2:-60}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc macros (as cargo-fuzz).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target "$triple" --bin "$target"
bin="target/$triple/release/$target"
mkdir -p "corpus/$target" "artifacts/$target"
if [[ $seconds == 0 ]]; then
  exec "$bin" -runs=0 "corpus/$target"
fi
exec "$bin" -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" \
  -max_len=1024 "corpus/$target"
