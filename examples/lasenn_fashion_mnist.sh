#!/usr/bin/env bash
# LaSeNN (Schneider, Algorithm 1; Table 7) on Fashion-MNIST with clean and 32 %-permuted training labels.
#
# For each label variant: noise (permute, r = 0.32) → train → embed (penultimate layer + logits) →
# lasenn with the paper's defaults (k = 3, w_q = 0.88, squared L2), with cosine + Table 2 analysis,
# a k × w_q sweep (Tables 5–6) from one neighbour search, and the same sweep with (k, w_q) chosen on
# a held-out 10 % of the training rows (--select-on validation; never on the test labels).
#
#   bash examples/lasenn_fashion_mnist.sh            # LeNet, 3 epochs, full Fashion-MNIST (CPU: minutes)
#   TOY=1 bash examples/lasenn_fashion_mnist.sh      # digits + mlp, 5 epochs (CI size, ~1 min)
#
# Environment: OUT (folder, default ./lasenn_fmnist or ./lasenn_toy), ARCH (lenet), EPOCHS,
# DATA_DIR (/usr/share/datasets/fashion-mnist), KNNTOOLS (the knntools executable), SEED (0).
set -euo pipefail

K=${KNNTOOLS:-knntools}
SEED=${SEED:-0}
if [ "${TOY:-0}" = 1 ]; then
  OUT=${OUT:-lasenn_toy}
  DATA=(--dataset digits)
  ARCH=${ARCH:-mlp}
  EPOCHS=${EPOCHS:-5}
else
  OUT=${OUT:-lasenn_fmnist}
  DATA=(--dataset fashion-mnist --data-dir "${DATA_DIR:-/usr/share/datasets/fashion-mnist}")
  ARCH=${ARCH:-lenet}
  EPOCHS=${EPOCHS:-3}
fi
mkdir -p "$OUT"
cd "$OUT"

"$K" noise "${DATA[@]}" --kind permute --rate 0.32 --seed "$SEED" -o labels_permute32.h5 --force -q >/dev/null

for variant in clean permute32; do
  labels=()
  [ "$variant" = permute32 ] && labels=(--labels labels_permute32.h5)
  "$K" train "${DATA[@]}" "${labels[@]}" --arch "$ARCH" --epochs "$EPOCHS" --seed "$SEED" -o "model_$variant.pt" --force -q >/dev/null
  for split in train test; do
    "$K" embed "model_$variant.pt" "${DATA[@]}" --split "$split" --layers penultimate -o "${variant}_$split.h5" --force -q >/dev/null
  done
  # Algorithm 1 defaults: k = 3, w_q = 0.88, squared L2 on the penultimate layer
  "$K" lasenn "${variant}_train.h5" "${variant}_test.h5" --layer penultimate -k 3 --w-q 0.88 \
      -o "lasenn_$variant.h5" --force --json > "lasenn_$variant.json"
  # cosine similarity (§3.3) and the Table 2 statistics
  "$K" lasenn "${variant}_train.h5" "${variant}_test.h5" --layer penultimate --metric cosine --analyze \
      -o "lasenn_cos_$variant.h5" --force --json > "lasenn_cos_$variant.json"
  # Tables 5-6: one search, every (k, w_q)
  "$K" lasenn "${variant}_train.h5" "${variant}_test.h5" --layer penultimate --k-sweep 1,2,3,4,8 --w-q 0,0.52,0.76,0.88,0.94,0.97 \
      -o "lasenn_sweep_$variant.h5" --force --json > "lasenn_sweep_$variant.json"
  # issue 17: the pair chosen on held-out training rows, then applied to the test set
  "$K" lasenn "${variant}_train.h5" "${variant}_test.h5" --layer penultimate --k-sweep 1,2,3,4,8 --w-q 0,0.52,0.76,0.88,0.94,0.97 \
      --select-on validation --val-fraction 0.1 --seed "$SEED" -o "lasenn_select_$variant.h5" --force --json > "lasenn_select_$variant.json"
done

python3 - <<'PY'
import json
print(f"{'labels':10} {'metric':7} {'acc. network':>12} {'acc. LaSeNN':>12} {'delta':>8} {'changed':>8} {'->right':>8} {'->wrong':>8}")
for v in ("clean", "permute32"):
    for tag, name in (("l2", f"lasenn_{v}.json"), ("cosine", f"lasenn_cos_{v}.json")):
        r = json.load(open(name))
        print(f"{v:10} {tag:7} {r['accuracy_original']:12.4f} {r['accuracy']:12.4f} {r['delta']:+8.4f} {r['n_changed']:8d} {r['n_changed_to_right']:8d} {r['n_changed_to_wrong']:8d}")
print()
print(f"{'labels':10} {'chosen on validation':>22} {'val. acc.':>10} {'test acc. LaSeNN':>17} {'test acc. network':>18}")
for v in ("clean", "permute32"):
    r = json.load(open(f"lasenn_select_{v}.json"))
    s = r["selection"]
    print(f"{v:10} {'k=%d, w_q=%g' % (s['k'], s['w_q']):>22} {s['accuracy_val']:10.4f} {r['accuracy']:17.4f} {r['accuracy_original']:18.4f}")
PY
