#!/usr/bin/env python3
"""Agreement of the two blind annotation passes of the training data.

Usage: scripts/annotation-agreement.py [ANNOTATION_DIR]   (default eval/train/annotation)

Reads A/NAME.tsv and B/NAME.tsv (UNIT_ID<TAB>LABEL<TAB>ALT, one line per unit
of eval/train/texts/NAME.txt, in order) and prints, per batch (the first
letter of the text name) and overall: units, raw agreement and Cohen's kappa,
then the most frequent disagreements. Checks that every disagreement has an
adjudicated line in adjudicated.tsv and that labels/NAME.tsv carries the
agreed or adjudicated label.
"""
import collections, glob, os, re, sys

LABELS = ["report", "quotation", "endorsement", "opinion"]

def rows(path):
    return [l.split("\t") for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]

def kappa(pairs):
    n = len(pairs)
    po = sum(a == b for a, b in pairs) / n
    ca = collections.Counter(a for a, _ in pairs)
    cb = collections.Counter(b for _, b in pairs)
    pe = sum(ca[l] * cb[l] for l in LABELS) / n / n
    return po, (po - pe) / (1 - pe)

def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "eval/train/annotation"
    labels_dir = os.path.join(os.path.dirname(root.rstrip("/")), "labels")
    adjudicated = {r[0]: r[1] for r in rows(os.path.join(root, "adjudicated.tsv"))}
    groups = collections.defaultdict(list)
    confusions = collections.Counter()
    bad = 0
    for path in sorted(glob.glob(os.path.join(root, "A", "*.tsv"))):
        name = os.path.basename(path)[:-4]
        a_rows, b_rows = rows(path), rows(os.path.join(root, "B", name + ".tsv"))
        final = rows(os.path.join(labels_dir, name + ".tsv"))
        if not (len(a_rows) == len(b_rows) == len(final)):
            print(f"{name}: passes and labels differ in length", file=sys.stderr)
            bad += 1
            continue
        for a, b, f in zip(a_rows, b_rows, final):
            groups[re.match(r"[a-z]*", name).group()].append((a[1], b[1]))
            groups["all"].append((a[1], b[1]))
            if a[1] == b[1]:
                want = a[1]
            else:
                confusions[tuple(sorted((a[1], b[1])))] += 1
                want = adjudicated.get(a[0])
            if f[0] != want:
                print(f"{a[0]}: labels/ has {f[0]}, annotation says {want}", file=sys.stderr)
                bad += 1
    print("| batch | units | agreement | kappa |\n|---|---|---|---|")
    for g in sorted(groups, key=lambda g: (g == "all", g)):
        po, k = kappa(groups[g])
        print(f"| {g} | {len(groups[g])} | {po:.3f} | {k:.3f} |")
    print("\n| disagreement | units |\n|---|---|")
    for (x, y), n in confusions.most_common():
        print(f"| {x} / {y} | {n} |")
    if bad:
        sys.exit(1)

if __name__ == "__main__":
    main()
