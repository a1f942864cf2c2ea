#!/usr/bin/env bash
# noise -> train -> embed on Fashion-MNIST: the data preparation every knntools experiment starts from.
#
# 1. `noise` makes a noisy-label variant of the training split (uniform, rate $RATE);
# 2. `train` trains the DkNN CNN (Adam 1e-3) on the clean labels and on the noisy labels;
# 3. `embed` dumps every layer (conv1, conv2, conv3 + logits) of both models for train and test,
#    plus the FGSM (eps 0.25, [0, 1] pixel units) test set of the clean model.
#
#   examples/fashion_mnist_pipeline.sh          # full size: 60k/10k, ~2-4 min per epoch on 2 busy CPU cores
#   TOY=1 examples/fashion_mnist_pipeline.sh    # CI size: digits + mlp, a few seconds per step
#
# Environment: OUT (output folder, default ./fmnist_pipeline or ./fmnist_toy), DATA_DIR (Fashion-MNIST
# IDX files, default /usr/share/datasets/fashion-mnist), EPOCHS (default 3), RATE (default 0.4),
# SUBSET (train on N random rows, Cohen et al.'s overfitting setting; default all), DTYPE (float32 |
# float16 layer storage), KNNTOOLS (the command, default knntools).
set -euo pipefail

TOY=${TOY:-0}
KNNTOOLS=${KNNTOOLS:-knntools}
RATE=${RATE:-0.4}
EPOCHS=${EPOCHS:-3}
DTYPE=${DTYPE:-float32}
if [ "$TOY" = 1 ]; then
  OUT=${OUT:-fmnist_toy}
  DATA=(--dataset digits)
  ARCH=(--arch mlp --arch-kwargs hidden=64)
  EPOCHS=${EPOCHS_TOY:-5}
else
  OUT=${OUT:-fmnist_pipeline}
  DATA=(--dataset fashion-mnist --data-dir "${DATA_DIR:-/usr/share/datasets/fashion-mnist}")
  ARCH=(--arch dknn-cnn)
fi
SUB=()
[ -n "${SUBSET:-}" ] && SUB=(--subset "$SUBSET")
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }
skip() { [ -f "$1" ] && echo "= $1 exists, skipped" >&2; }

# 1. Noisy labels for the training split.
skip "$OUT/labels.h5" || run $KNNTOOLS noise "${DATA[@]}" --kind uniform --rate "$RATE" --seed 0 -o "$OUT/labels.h5"

# 2. Train on clean and on noisy labels (per-epoch metrics go to <model>.metrics.csv).
skip "$OUT/model.pt" || run $KNNTOOLS train "${DATA[@]}" "${ARCH[@]}" "${SUB[@]}" --epochs "$EPOCHS" --seed 0 -o "$OUT/model.pt"
skip "$OUT/noisy.pt" || run $KNNTOOLS train "${DATA[@]}" "${ARCH[@]}" "${SUB[@]}" --labels "$OUT/labels.h5" --epochs "$EPOCHS" --seed 0 -o "$OUT/noisy.pt"
run $KNNTOOLS embed "$OUT/model.pt" --list-layers

# 3. Activations (dataset and data dir default to what the checkpoint was trained on).
for m in model noisy; do
  for split in train test; do
    skip "$OUT/${m}_${split}.h5" || run $KNNTOOLS embed "$OUT/$m.pt" --split "$split" --layers all --dtype "$DTYPE" -o "$OUT/${m}_${split}.h5"
  done
done
skip "$OUT/model_test_fgsm.h5" || run $KNNTOOLS embed "$OUT/model.pt" --split test --layers all --dtype "$DTYPE" --attack fgsm --eps 0.25 -o "$OUT/model_test_fgsm.h5"

# 4. Summary: test accuracy of the stored logits (clean model, noisy model, clean model under FGSM).
for f in model_test noisy_test model_test_fgsm; do
  $KNNTOOLS info "$OUT/$f.h5" --json | python3 -c "import json,sys; a=json.load(sys.stdin)['files'][0]['attrs']; print('$f: accuracy of the stored logits', a.get('accuracy'))"
done
