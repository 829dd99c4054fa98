#!/usr/bin/env bash
# scripts/fuzz/campaign.sh - run the fuzz targets one after another.
#
# Usage: scripts/fuzz/campaign.sh [TARGET...]        (default: every target)
# Env:   RUNS      executions per target (default 1200000)
#        MAX_TIME  seconds per target at most (default 3600)
#        FUZZ      how to call cargo (default: what scripts/fuzz/setup.sh prints)
#        EXTRA     more libFuzzer flags (e.g. -max_len=1024: short inputs run faster)
#
# Each target runs on its working corpus fuzz/corpus/<target> (grown by the
# run, not committed) plus the committed seeds fuzz/seeds/<target>, in one
# process (the machine's cores are shared). The libFuzzer log of each run is
# kept in fuzz/logs/<target>.log; a summary line per target (executions,
# execs/s, coverage, crashes) is printed at the end and appended to
# fuzz/logs/summary.tsv. A failing input is left in fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "$0")/../.."

RUNS="${RUNS:-1200000}"
MAX_TIME="${MAX_TIME:-3600}"
FUZZ="${FUZZ:-$(bash scripts/fuzz/setup.sh)}" || { echo "campaign: no fuzz toolchain" >&2; exit 3; }
ALL="segment preprocess tokenizer_json unigram safetensors e5s1 gold registry hub_listing"
TARGETS="${*:-$ALL}"

mkdir -p fuzz/logs
eval "$FUZZ fuzz build --sanitizer none --codegen-units 16" || exit 1
status=0
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/logs/$t.log"
  echo "== $t: up to $RUNS runs or ${MAX_TIME}s" >&2
  start=$(date +%s)
  eval "$FUZZ fuzz run --sanitizer none --codegen-units 16 $t fuzz/corpus/$t fuzz/seeds/$t -- \
    -runs=$RUNS -max_total_time=$MAX_TIME -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 ${EXTRA:-}" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  verdict=ok
  if [[ $rc -ne 0 ]]; then
    verdict="FAILED (rc $rc; see $log and fuzz/artifacts/$t/)"
    status=1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "${execs:-?}" \
    "$secs" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict ${EXTRA:-}" | tee -a fuzz/logs/summary.tsv
done
exit $status
