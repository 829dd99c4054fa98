#!/usr/bin/env bash
# Regenerate tests/fixtures/arabert_parity.json with the real `arabert`
# package (ArabertPreprocessor for aubmindlab/bert-base-arabertv02), in a
# throwaway venv. The Rust port in src/text/preprocess.rs must match it byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TMPDIR:-/tmp}/mawqif-arabert-venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "arabert==1.0.1"
"$venv/bin/python" - scripts/arabert-parity/strings.txt tests/fixtures/arabert_parity.json <<'PY'
import json, sys
from importlib.metadata import version
from arabert.preprocess import ArabertPreprocessor
prep = ArabertPreprocessor("aubmindlab/bert-base-arabertv02")
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")[:-1]
cases = [{"input": s, "expected": prep.preprocess(s)} for s in lines]
out = {"generator": f"arabert=={version('arabert')} ArabertPreprocessor('aubmindlab/bert-base-arabertv02').preprocess, pyarabic=={version('PyArabic')}",
       "cases": cases}
with open(sys.argv[2] + ".tmp", "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
import os; os.replace(sys.argv[2] + ".tmp", sys.argv[2])
print(f"wrote {len(cases)} cases to {sys.argv[2]}")
PY
