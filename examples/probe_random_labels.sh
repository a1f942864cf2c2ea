#!/usr/bin/env bash
# Cohen, Giryes & Sapiro: probe a network trained on true labels vs one trained on random labels.
#
# For each label variant: train (periodic checkpoints) → embed every layer → probe all layers with
# k-NN (k = 30, leave-one-out on train), linear SVM and LR (Figure 4) → embed the penultimate layer
# of every checkpoint → probe over training (Figures 1, 2, 5 / 6 as table + PNG).
# Expected: with true labels the probes follow the DNN on test; with random labels the DNN memorises
# the training set (train accuracy → 1) but k-NN train accuracy rises only in the last layers, and
# test accuracy stays at chance.
#
#   bash examples/probe_random_labels.sh          # Fashion-MNIST, 3-hidden-layer MLP, 2000 training rows
#                                                 # (CPU: ~15 min for 'true', ~35 min for 'random' on a loaded 2-core box)
#   VARIANTS=random SUBSET=1000 EPOCHS_RANDOM=80 CKPT_RANDOM=160 bash examples/probe_random_labels.sh   # docs/results/probe.md §2b
#   TOY=1 bash examples/probe_random_labels.sh    # digits + mlp, few epochs, random labels only (CI size)
#
# Environment: OUT, ARCH (ffn) and ARCH_KWARGS (hidden=[512,512,512]: fc1, fc2, fc3 + logits, enough
# capacity to memorise random labels quickly), SUBSET (2000 training rows; memorising 60k random
# labels on a CPU is out of budget), EPOCHS_TRUE (30), EPOCHS_RANDOM (100), CKPT_TRUE / CKPT_RANDOM
# (optimizer steps between checkpoints), VARIANTS ("true random": run only some), DATA_DIR, KNNTOOLS, SEED.
set -euo pipefail

K=${KNNTOOLS:-knntools}
SEED=${SEED:-0}
if [ "${TOY:-0}" = 1 ]; then
  OUT=${OUT:-probe_toy}
  DATA=(--dataset digits)
  ARCH=${ARCH:-mlp}
  ARCH_KWARGS=${ARCH_KWARGS:-}
  SUB=()
  EPOCHS_TRUE=${EPOCHS_TRUE:-2}     # 11 steps per epoch: 2 checkpoints, enough for a curve
  EPOCHS_RANDOM=${EPOCHS_RANDOM:-2}
  CKPT_TRUE=${CKPT_TRUE:-11}
  CKPT_RANDOM=${CKPT_RANDOM:-11}
  PROBE_ARGS=(--pca-dim 32)         # SVM/LR on 32 PCA components: liblinear on 640-d fc1 takes ~30 s
  VARIANTS=${VARIANTS:-random}      # CI: the random-labels run exercises every command of the 'true' one
else
  OUT=${OUT:-probe_fmnist}
  DATA=(--dataset fashion-mnist --data-dir "${DATA_DIR:-/usr/share/datasets/fashion-mnist}")
  ARCH=${ARCH:-ffn}
  ARCH_KWARGS=${ARCH_KWARGS-hidden=[512,512,512]}
  SUB=(--subset "${SUBSET:-2000}")
  EPOCHS_TRUE=${EPOCHS_TRUE:-30}
  EPOCHS_RANDOM=${EPOCHS_RANDOM:-100}
  CKPT_TRUE=${CKPT_TRUE:-80}      # 2000 rows / batch 128 = 16 steps per epoch: 6 checkpoints
  CKPT_RANDOM=${CKPT_RANDOM:-200}  # 1600 steps: 8 checkpoints
  PROBE_ARGS=()
fi
mkdir -p "$OUT"
cd "$OUT"

"$K" noise "${DATA[@]}" --kind random --seed "$SEED" -o labels_random.h5 --force -q >/dev/null

for variant in ${VARIANTS:-true random}; do
  labels=()
  epochs=$EPOCHS_TRUE
  every=$CKPT_TRUE
  if [ "$variant" = random ]; then labels=(--labels labels_random.h5); epochs=$EPOCHS_RANDOM; every=$CKPT_RANDOM; fi
  rm -rf "ckpt_$variant" "curves_$variant"
  mkdir -p "curves_$variant"
  akw=()
  [ -n "$ARCH_KWARGS" ] && akw=(--arch-kwargs "$ARCH_KWARGS")
  "$K" train "${DATA[@]}" "${labels[@]}" "${SUB[@]}" --arch "$ARCH" "${akw[@]}" --epochs "$epochs" --seed "$SEED" \
      --checkpoint-every "$every" --checkpoint-dir "ckpt_$variant" -o "model_$variant.pt" --force -q >/dev/null
  # Figure 4: every layer of the final network
  for split in train test; do
    "$K" embed "model_$variant.pt" "${DATA[@]}" --split "$split" --layers all -o "${variant}_$split.h5" --force -q >/dev/null
  done
  "$K" probe "${variant}_train.h5" "${variant}_test.h5" --layers all --classifiers knn,svm,lr --loo "${PROBE_ARGS[@]}" \
      --trained-rows "model_$variant.pt" -o "probe_$variant.h5" --plot "probe_$variant.png" --force --json > "probe_$variant.json"
  # Figures 1, 2, 5 (6 for random labels): the penultimate layer over training
  for ck in "ckpt_$variant"/step-*.pt; do
    step=$(basename "$ck" .pt); step=$((10#${step#step-}))
    for split in train test; do
      "$K" embed "$ck" "${DATA[@]}" --split "$split" --layers penultimate -o "curves_$variant/ckpt_${split}_$step.h5" --force -q >/dev/null
    done
  done
  "$K" probe --checkpoints "curves_$variant"/ckpt_train_*.h5 --test "curves_$variant"/ckpt_test_*.h5 --loo --layers penultimate \
      --classifiers knn,svm,lr "${PROBE_ARGS[@]}" --trained-rows "model_$variant.pt" -o "curves_$variant.h5" --plot "curves_$variant.png" --force --json > "curves_$variant.json"
done

python3 - <<'PY'
import json
import os
for v in ("true", "random"):
    if not os.path.exists(f"probe_{v}.json"):
        continue
    r = json.load(open(f"probe_{v}.json"))
    print(f"== {v} labels: accuracy (train = against the labels trained on, k-NN leave-one-out; test = ground truth)")
    print(f"{'layer':10} {'split':6} {'dnn':>7} {'knn':>7} {'svm':>7} {'lr':>7}   P_SAME knn")
    rows = r["rows"]
    for layer in r["layers"]:
        for split in ("train", "test"):
            acc = {x["classifier"]: x for x in rows if x["layer"] == layer and x["split"] == split}
            cells = " ".join(f"{acc[c]['accuracy']:7.4f}" if c in acc else "      -" for c in ("dnn", "knn", "svm", "lr"))
            ps = acc["knn"]["p_same"] if "knn" in acc else float("nan")
            print(f"{layer:10} {split:6} {cells}   {ps:.4f}")
    c = json.load(open(f"curves_{v}.json"))
    print(f"   over training: {c['n_checkpoints']} checkpoints, memorisation step {c['memorization_step']}")
PY
