"""Medians of bench.jsonl per (model, system) as a Markdown table, with
mawqif's ratio to each peer."""

import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = defaultdict(list)
for r in rows:
    if r.get("model_label") == "agreement":
        continue
    groups[(r.get("model_label", "e5-small"), r["system"])].append(r)


def fmt(x, digits=1):
    return "–" if x != x else f"{x:.{digits}f}"


def med(rs, key):
    vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else float("nan")


print("| model | system | runs | sentences/s | p50 ms (batch 1) | p95 ms | peak RSS MB | mawqif ÷ this |")
print("|---|---|---|---|---|---|---|---|")
for model in sorted({m for m, _ in groups}):
    systems = [s for m, s in groups if m == model]
    # mawqif's own rows: the fast engine (the ratios' reference) and the
    # whole command timed from outside; mawqif-candle is the old engine.
    ours = [s for s in systems if s.startswith("mawqif") and s != "mawqif-candle"]
    fast = [s for s in ours if s.startswith("mawqif-")]
    ours_tp = med(groups[(model, fast[0])], "sentences_per_s") if fast else float("nan")
    for s in sorted(systems, key=lambda s: -med(groups[(model, s)], "sentences_per_s")):
        rs = groups[(model, s)]
        tp = med(rs, "sentences_per_s")
        ratio = "" if s in ours else f"{ours_tp / tp:.2f}×"
        print(f"| {model} | {s} | {len(rs)} | {fmt(tp)} | {fmt(med(rs, 'latency_p50_ms'))} | "
              f"{fmt(med(rs, 'latency_p95_ms'))} | {fmt(med(rs, 'peak_rss_mb'), 0)} | {ratio} |")
agree = [r for r in rows if "label_agreement" in r]
for r in agree:
    print(f"\nLabel agreement of mawqif ({r['system']}) with PyTorch f32 embeddings through the same head (the frozen fallback: the default head carries an encoder update that PyTorch's base weights lack): "
          f"{100 * r['label_agreement']:.2f}% of {r['sentences']} sentences "
          f"({r['label_disagreements']} differ); embedding cosine min {r['cosine_min']:.5f}, "
          f"mean {r['cosine_mean']:.6f}.")
