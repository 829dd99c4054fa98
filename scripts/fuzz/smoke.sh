#!/usr/bin/env bash
# scripts/fuzz/smoke.sh - a short fuzz run of every target (CI).
#
# Usage: scripts/fuzz/smoke.sh [SECONDS]   (per target; default 5)
# Each target runs for SECONDS on its committed seeds, plus a scratch corpus
# that is thrown away. Skips, loudly, with exit 0 when no toolchain here can
# build libFuzzer targets (scripts/fuzz/setup.sh decides); fails on any crash.
set -uo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_TARGET="${1:-5}"
if ! FUZZ="$(bash scripts/fuzz/setup.sh)"; then
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!! FUZZ SMOKE SKIPPED: no toolchain here can build libFuzzer targets   !!" >&2
  echo "!! (no nightly, and stable failed too): see FUZZING.md                 !!" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "" >&2
  exit 0
fi
eval "$FUZZ fuzz build --sanitizer none --codegen-units 16" || exit 1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=""
for t in $(eval "$FUZZ fuzz list"); do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  if eval "$FUZZ fuzz run --sanitizer none --codegen-units 16 $t $scratch/$t fuzz/seeds/$t -- \
      -max_total_time=$SECONDS_PER_TARGET -timeout=10 -rss_limit_mb=4096 -print_final_stats=1" \
      > "$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    echo "fuzz smoke: $t ok (${execs:-?} executions in ${SECONDS_PER_TARGET}s)"
  else
    echo "fuzz smoke: $t FAILED; the end of its log:" >&2
    tail -40 "$log" >&2
    failed="$failed $t"
  fi
done
if [[ -n "$failed" ]]; then
  echo "fuzz smoke: failures in:$failed (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
