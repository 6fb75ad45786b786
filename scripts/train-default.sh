#!/usr/bin/env bash
# Rebuilds the shipped default model (models/default.onnx and its card models/default.md)
# from the real recordings, and evaluates it against the class-weighted baseline:
#
#   scripts/train-default.sh [DATA_DIR]
#
# DATA_DIR holds the recordings and their sources.tsv (default data/real; if missing,
# ../shared/data/real is linked when present, otherwise scripts/fetch-data.sh rebuilds it from
# the Debian packages). Steps, all deterministic:
#   1. train the clustered-centroid model and the class-weighted baseline
#      (trainer/configs/default.toml, same data, same budget);
#   2. make validation mixtures (validation packages) and test mixtures (held-out packages):
#      30 s, one event each at -6/0/+6 dB, plus background-only audio with hard negatives;
#   3. choose per-class thresholds on the validation mixtures only;
#   4. export both models with those thresholds;
#   5. run `hark detect` on the test mixtures and score the events (onset, 500 ms collar) and
#      false alarms per hour; write the tables into the model card.
# Work files go to runs/default/. Takes about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/real}
if [ ! -f "$data/sources.tsv" ]; then
    if [ "$data" = data/real ] && [ -f ../shared/data/real/sources.tsv ]; then
        ln -sfn "$(cd ../shared/data/real && pwd)" data/real
    else
        scripts/fetch-data.sh "$data"
    fi
fi
if [ "$data" != data/real ]; then
    ln -sfn "$(cd "$data" && pwd)" data/real
fi

bash scripts/setup.sh
if ! command -v flac >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "train-default: installing flac" >&2
    $SUDO apt-get install -y -qq flac >/dev/null
fi
cargo build --release --locked -p hark -p hark-trainer
bin=target/release
cfg=trainer/configs/default.toml
work=runs/default
mkdir -p "$work"
start=$(date +%s)

for method in centroid weighted_ce; do
    "$bin/hark-train" train --config "$cfg" --method "$method" --out "$work/$method"
done
"$bin/hark-train" mixtures --config "$cfg" --split val --out "$work/mix-val" --background-minutes 60
"$bin/hark-train" mixtures --config "$cfg" --split test --out "$work/mix-test" --background-minutes 60

for method in centroid weighted_ce; do
    "$bin/hark-train" tune --model "$work/$method/model.onnx" --mixtures "$work/mix-val" \
        -o "$work/$method/thresholds.json"
    "$bin/hark-train" export "$work/$method" -o "$work/$method/default.onnx" \
        --thresholds "$work/$method/thresholds.json"
    (cd "$work/mix-test" && "../../../$bin/hark" detect --model "../$method/default.onnx" \
        mixtures/*.wav background/*.wav > "../$method/test-detections.jsonl")
    "$bin/hark-train" score "$work/mix-test" "$work/$method/test-detections.jsonl" \
        --json "$work/$method/test-score.json" | tee "$work/$method/test-score.md"
done

# The shipped model is the method with the better event F1 on the validation audio (mixtures
# and background-only files, whose false alarms count as false positives).
best=$(python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def val_f1(m):
    c = json.load(open(f"{w}/{m}/thresholds.candidates.json"))
    return sum(max(x["f1_all"] for x in v if x["threshold"] == c["thresholds"][k]) for k, v in c["candidates"].items())
print(max(["centroid", "weighted_ce"], key=val_f1))
PY
)
echo "train-default: shipping the $best model (better validation event F1, false alarms counted)"
"$bin/hark-train" card-eval --card "$work/$best/default.md" \
    --method centroid="$work/centroid/test-score.json" \
    --method weighted_ce="$work/weighted_ce/test-score.json" \
    --mixtures "$work/mix-test" --weaknesses trainer/configs/default-weaknesses.md \
    --command "scripts/train-default.sh"
mkdir -p models
cp "$work/$best/default.onnx" models/default.onnx
cp "$work/$best/default.md" models/default.md
# The demo: one held-out clip of every class over held-out background, +6 dB.
"$bin/hark-train" demo --config "$cfg" --split test -o "$work/demo.wav"
flac --silent --force --best -o models/demo.flac "$work/demo.wav"
cp "$work/demo.tsv" models/demo.tsv
echo "train-default: models/default.onnx and models/default.md written in $(( $(date +%s) - start )) s"
