#!/usr/bin/env bash
# Memory and speed of `mawqif classify` on archives (issue: whole archives).
# Builds JSONL corpora from the project's own training texts, then measures
# peak RSS and throughput with GNU time. Usage:
#   scripts/bench-archive.sh [BIN] [WORKDIR]      (defaults: target/release/mawqif, /tmp/mawqif-archive-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/mawqif}
WORK=${2:-/tmp/mawqif-archive-bench}
mkdir -p "$WORK"

# corpus SIZE_MB -> $WORK/corpus-SIZE.jsonl: records cycling over the texts.
corpus() {
  local mb=$1 out="$WORK/corpus-$1.jsonl"
  [ -s "$out" ] || python3 - "$mb" "$out" <<'PY'
import json, pathlib, sys
limit = int(sys.argv[1]) * 1024 * 1024
texts = [p.read_text() for p in sorted(pathlib.Path("eval/train/texts").glob("*.txt"))]
written = i = 0
with open(sys.argv[2] + ".tmp", "w") as f:
    while written < limit:
        line = json.dumps({"id": f"doc-{i}", "outlet": f"o{i % 7}", "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n"
        f.write(line)
        written += len(line.encode())
        i += 1
pathlib.Path(sys.argv[2] + ".tmp").rename(sys.argv[2])
PY
  echo "$out"
}

# measure NAME ARGS...: peak RSS (MB) and wall time of one run, output discarded.
measure() {
  local name=$1; shift
  local err="$WORK/run.err"
  /usr/bin/time -f "%M %e" -o "$WORK/time.txt" "$BIN" "$@" > /dev/null 2> "$err" || true
  read -r kb secs < "$WORK/time.txt"
  printf '%-34s peak RSS %6.1f MB  %7.1f s  %s\n' "$name" "$(echo "$kb/1024" | bc -l)" "$secs" "$(tail -n 1 "$err")"
}

small=$(corpus 10)
big=$(corpus 1024)
echo "corpora: $(du -h "$small" | cut -f1) and $(du -h "$big" | cut -f1) of JSONL records"
measure "cues, 10 MB" classify --model cues --input jsonl "$small"
measure "cues, 1 GB" classify --model cues --input jsonl "$big"
measure "e5, 10 MB, shard 0/40 (~250 KB)" classify --input jsonl --shard 0/40 "$small"
measure "e5, 1 GB, shard 0/4000 (~250 KB)" classify --input jsonl --shard 0/4000 "$big"
measure "e5, 10 MB, shard 0/8 (~1.25 MB)" classify --input jsonl --shard 0/8 "$small"

# The first line of a 30,000-sentence text through `| head -1`.
python3 - "$WORK/big.txt" <<'PY'
import pathlib, sys
texts = [p.read_text() for p in sorted(pathlib.Path("eval/train/texts").glob("*.txt"))]
body, sentences, i = [], 0, 0
while sentences < 30000:
    body.append(texts[i % len(texts)]); sentences += texts[i % len(texts)].count(".") + texts[i % len(texts)].count("؟"); i += 1
pathlib.Path(sys.argv[1]).write_text("\n".join(body))
PY
start=$(date +%s.%N)
set +o pipefail
first=$({ "$BIN" classify "$WORK/big.txt" 2> "$WORK/head.err"; echo $? > "$WORK/head.rc"; } | head -n 1)
end=$(date +%s.%N)
printf '%-34s %5.1f s to the first line and exit; exit status %s; stderr: %s bytes\n' "e5, 30k sentences | head -1" "$(echo "$end - $start" | bc -l)" "$(cat "$WORK/head.rc")" "$(wc -c < "$WORK/head.err")"
[ -n "$first" ] || { echo "no first line" >&2; exit 1; }
