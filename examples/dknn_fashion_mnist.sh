#!/usr/bin/env bash
# Reproduce the DkNN experiment of Liu's report (Papernot & McDaniel 2018, Figure 1) on Fashion-MNIST:
# train the DkNN CNN (conv 64 8x8/2 same, conv 128 6x6/2 valid, conv 128 5x5/1 valid, linear 10;
# Adam, lr 1e-3), embed the clean and the FGSM (eps 0.25 in [0, 1] pixel units) test sets, run
# `knntools dknn` (k = 75, |A| = 750 held-out clean test samples) on both, and write the reliability
# diagrams (DNN softmax confidence vs DkNN credibility) of both.
#
#   examples/dknn_fashion_mnist.sh                 # full run: ~10 min on 2 idle CPU cores (3x on a loaded one)
#   TOY=1 examples/dknn_fashion_mnist.sh           # digits + mlp, k = 10, |A| = 100: CI size, ~1 min
#
# Environment: OUT (output folder, default ./dknn_fmnist or ./dknn_toy), DATA_DIR (Fashion-MNIST IDX
# files, default /usr/share/datasets/fashion-mnist), EPOCHS, KNNTOOLS (the command, default knntools),
# EXTRA (extra flags for every dknn run, e.g. "--backend hnsw").
set -euo pipefail

TOY=${TOY:-0}
KNNTOOLS=${KNNTOOLS:-knntools}
EXTRA=${EXTRA:-}
if [ "$TOY" = 1 ]; then
  OUT=${OUT:-dknn_toy}
  DATA=(--dataset digits)
  ARCH=mlp; EPOCHS=${EPOCHS:-10}; K=10; CAL=100; EPS=0.25
else
  OUT=${OUT:-dknn_fmnist}
  DATA=(--dataset fashion-mnist --data-dir "${DATA_DIR:-/usr/share/datasets/fashion-mnist}")
  ARCH=dknn-cnn; EPOCHS=${EPOCHS:-3}; K=75; CAL=750; EPS=0.25
fi
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }

# 1. Train the network (skipped when the checkpoint exists).
[ -f "$OUT/model.pt" ] || run $KNNTOOLS train "${DATA[@]}" --arch "$ARCH" --epochs "$EPOCHS" --optimizer adam --lr 1e-3 --seed 0 -o "$OUT/model.pt"
run $KNNTOOLS embed "$OUT/model.pt" --list-layers

# 2. Activations of every layer (hidden layers + logits) for train, clean test and FGSM test.
[ -f "$OUT/train.h5" ] || run $KNNTOOLS embed "$OUT/model.pt" "${DATA[@]}" --split train --layers all -o "$OUT/train.h5"
[ -f "$OUT/test.h5" ] || run $KNNTOOLS embed "$OUT/model.pt" "${DATA[@]}" --split test --layers all -o "$OUT/test.h5"
[ -f "$OUT/test_fgsm.h5" ] || run $KNNTOOLS embed "$OUT/model.pt" "${DATA[@]}" --split test --layers all --attack fgsm --eps "$EPS" -o "$OUT/test_fgsm.h5"

# 3. DkNN on the clean test set: the first $CAL test samples calibrate, the rest are evaluated.
run $KNNTOOLS dknn "$OUT/train.h5" "$OUT/test.h5" -k "$K" --calibration "$CAL" $EXTRA \
  -o "$OUT/dknn.h5" --plot "$OUT/reliability_clean.png" --json --force > "$OUT/dknn.json"

# 4. DkNN on the FGSM test set, calibrated on the same clean samples (their FGSM versions are not evaluated).
run $KNNTOOLS dknn "$OUT/train.h5" "$OUT/test_fgsm.h5" -k "$K" --calibration-file "$OUT/test.h5" --calibration "$CAL" $EXTRA \
  -o "$OUT/dknn_fgsm.h5" --plot "$OUT/reliability_fgsm.png" --json --force > "$OUT/dknn_fgsm.json"

# 5. The report's Figure 1 in one picture: rows clean / FGSM, columns DNN softmax / DkNN credibility.
PYTHON=${PYTHON:-python3}
"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from knntools.io.h5 import KFile, atomic_path
from knntools.plotting.reliability import dknn_panels, reliability_figure

out = Path(sys.argv[1])
panels = []
for name, label in (("dknn.h5", "clean"), ("dknn_fgsm.h5", "FGSM")):
    with KFile(out / name, kind="predictions") as kf:
        y, pred = kf.read("labels"), kf.read("predictions")
        panels += dknn_panels(credibility=kf.read("credibility"), dknn_correct=pred == y,
                              dnn_confidence=kf.read("dnn_confidence"), dnn_correct=kf.read("dnn_predictions") == y, label=label)
fig = reliability_figure(panels, ncols=2, suptitle="DNN softmax confidence vs DkNN credibility (Figure 1)")
with atomic_path(out / "figure1.png", force=True) as tmp:
    fig.savefig(tmp, format="png", dpi=110)
for name in ("dknn.json", "dknn_fgsm.json"):
    s = json.loads((out / name).read_text())
    f = lambda v: "n/a" if v is None else f"{v:.4f}"
    print(f"{name}: DkNN acc {f(s['accuracy'])}  DNN acc {f(s['dnn_accuracy'])}  mean credibility {f(s['mean_credibility'])} "
          f"(correct {f(s['mean_credibility_correct'])}, wrong {f(s['mean_credibility_wrong'])})  {s['timing_s']['total']:.1f} s")
print(out / "figure1.png")
PY
