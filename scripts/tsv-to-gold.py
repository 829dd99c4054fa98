#!/usr/bin/env python3
"""Turn hand-labelled TSVs (label<TAB>alt<TAB>unit text, one row per unit, in
order) into gold JSONL with byte spans, using mawqif's own segmenter, so the
gold units are exactly the units `mawqif classify` produces.

Usage: scripts/tsv-to-gold.py TEXT_DIR LABEL_DIR OUT_DIR [--prefix ID_PREFIX]
Fails (exit 1) naming the first unit where the TSV and the segmenter disagree.
"""
import json, os, subprocess, sys

def main():
    text_dir, label_dir, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    bad = 0
    for name in sorted(os.listdir(text_dir)):
        if not name.endswith(".txt"):
            continue
        stem = name[:-4]
        text_path = os.path.join(text_dir, name)
        tsv_path = os.path.join(label_dir, stem + ".tsv")
        segs = subprocess.run(["cargo", "run", "-q", "--", "segment", text_path],
                              check=True, capture_output=True, text=True).stdout
        segs = [json.loads(l) for l in segs.splitlines() if l.strip()]
        rows = [r.split("\t") for r in open(tsv_path, encoding="utf-8").read().split("\n") if r.strip()]
        if len(rows) != len(segs) or any(r[2] != s["text"] for r, s in zip(rows, segs)):
            bad += 1
            for k in range(max(len(rows), len(segs))):
                a = rows[k][2] if k < len(rows) else None
                b = segs[k]["text"] if k < len(segs) else None
                if a != b:
                    print(f"{stem}: unit {k + 1} differs\n  tsv:       {a}\n  segmenter: {b}", file=sys.stderr)
                    break
            continue
        lines = []
        for r, s in zip(rows, segs):
            lines.append(json.dumps({"id": f"{stem}-{s['index']:02d}", "start": s["start"], "end": s["end"],
                                     "text": s["text"], "label": r[0], "alt": None if r[1] == "-" else r[1]},
                                    ensure_ascii=False))
        tmp = os.path.join(out_dir, stem + ".gold.jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, os.path.join(out_dir, stem + ".gold.jsonl"))
    if bad:
        sys.exit(1)

if __name__ == "__main__":
    main()
