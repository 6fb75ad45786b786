#!/usr/bin/env python3
"""Threshold-free comparison of models on evaluation mixtures (`hark-train mixtures`).

    scripts/operating-points.py [--json] MODEL[,MODEL...] MIXTURES_DIR [HARK_BINARY]

Runs `hark detect -v --verbose-every 1` on every mixture and background-only file and reads
the smoothed score of every class at every hop. With several models (comma-separated) the
scores are averaged hop by hop (what `hark-train merge` builds into one model). For each
event class it prints the best recall reachable at a false-alarm budget of 2, 10 and 50 per
hour: an event counts as found when its class's score reaches the threshold within
[onset - 0.5 s, onset + 1 s]; a false alarm is an upward crossing of the threshold in the
background-only files. Use validation mixtures to compare models; never test mixtures.
With --json, the last line is a JSON object: each class's and the mean's three recalls.
"""
import json
import collections
import glob
import os
import re
import subprocess
import sys

as_json = "--json" in sys.argv[1:]
if as_json:
    sys.argv.remove("--json")
if len(sys.argv) < 3:
    sys.exit(__doc__)
models = [os.path.abspath(m) for m in sys.argv[1].split(",")]
mix = sys.argv[2]
hark = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else "target/release/hark")


def trace1(model, path):
    p = subprocess.run([hark, "detect", "-m", model, "-v", "--verbose-every", "1", path],
                       capture_output=True, text=True, cwd=mix)
    if p.returncode != 0:
        sys.exit(f"hark detect failed on {path}: {p.stderr.strip()[-500:]}")
    rows = []
    for line in p.stderr.splitlines():
        m = re.match(r"\s*([\d.]+)s\s", line)
        if m:
            scores = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
            rows.append((float(m.group(1)), scores))
    return rows


def trace(path):
    per_model = [trace1(m, path) for m in models]
    out = []
    for rows in zip(*per_model):
        keys = rows[0][1].keys()
        out.append((rows[0][0], {k: sum(r[1][k] for r in rows) / len(rows) for k in keys}))
    return out


reference = [l.rstrip("\n").split("\t") for l in open(os.path.join(mix, "reference.tsv"))][1:]
hits, cache = collections.defaultdict(list), {}
for f, onset, _, cls in reference:
    if f not in cache:
        cache[f] = trace(f)
    onset = float(onset)
    near = [s.get(cls, 0.0) for t, s in cache[f] if onset - 0.5 <= t <= onset + 1.0]
    hits[cls].append(max(near, default=0.0))
backgrounds = [trace(os.path.relpath(b, mix))
               for b in sorted(glob.glob(os.path.join(mix, "background", "*.wav")))]
hours = sum(len(t) for t in backgrounds) * 0.01 / 3600
if hours == 0:
    sys.exit("no background-only audio in " + mix)
thresholds = [i / 1000 for i in range(50, 1000, 5)] + [0.996, 0.998, 0.999, 0.9995, 0.9999]
budgets = [2, 10, 50]
rows, table = [], {}
for cls in sorted(hits):
    fa_per_hour = []
    for th in thresholds:
        n = 0
        for tr in backgrounds:
            above = False
            for _, s in tr:
                a = s.get(cls, 0.0) >= th
                n += a and not above
                above = a
        fa_per_hour.append(n / hours)
    best = [max([sum(h >= th for h in hits[cls]) / len(hits[cls])
                 for th, fa in zip(thresholds, fa_per_hour) if fa <= b], default=0.0)
            for b in budgets]
    rows.append(best)
    table[cls] = best
    print(f"{cls:<12} events {len(hits[cls]):3d}  recall at <= 2 FA/h {best[0]:.2f}"
          f"  <= 10 {best[1]:.2f}  <= 50 {best[2]:.2f}")
means = [sum(r[i] for r in rows) / len(rows) for i in range(len(budgets))]
print(f"{'mean':<12} {'':10}  recall at <= 2 FA/h {means[0]:.2f}  <= 10 {means[1]:.2f}"
      f"  <= 50 {means[2]:.2f}   ({hours:.2f} h of background)")
if as_json:
    table["mean"] = means
    print(json.dumps(table))
