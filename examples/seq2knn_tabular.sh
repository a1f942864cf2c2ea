#!/usr/bin/env bash
# Xu & Klabjan, "kNN by seq2seq and memory networks": models vs kNN on real imbalanced tables,
# full kNN targets and out-of-core ones (R = 50 batches of B = 64 rows; Table 2 / Table 3).
#
#   bash examples/seq2knn_tabular.sh                 # churn and caravan (needs: pip install 'knntools[tabular]')
#   TOY=1 bash examples/seq2knn_tabular.sh           # tiny CI run on scikit-learn's breast-cancer (v2vsls, mnknn-vec)
#   DATA="churn" SEEDS="0 1 2" OUT=/tmp/s2k bash examples/seq2knn_tabular.sh
#
# Writes under $OUT: <data>_train.h5 / <data>_test.h5 (fixed stratified 75/25 split of the bundled
# set), one checkpoint and one JSON summary per (data, model, mode, seed), and results.md (a table).
set -euo pipefail
KNNTOOLS=${KNNTOOLS:-knntools}
PYTHON=${PYTHON:-python}
OUT=${OUT:-seq2knn_results}
EPOCHS=${EPOCHS:-30}
BATCHES=${BATCHES:-50}
BATCH_SIZE=${BATCH_SIZE:-64}
SEEDS=${SEEDS:-0}
MODELS=${MODELS:-"v2vsls v2ls v2vs mnknn mnknn-vec"}
MODES=${MODES:-"full ooc"}
DATA=${DATA:-"churn caravan"}
if [[ "${TOY:-0}" == "1" ]]; then
  DATA="breast-cancer"; EPOCHS=2; BATCHES=5; SEEDS=0; MODELS="v2vsls mnknn-vec"
fi
mkdir -p "$OUT"
for data in $DATA; do
  [[ -f "$OUT/${data}_train.h5" ]] || "$KNNTOOLS" features "$data" --split train -o "$OUT/${data}_train.h5" -q
  [[ -f "$OUT/${data}_test.h5" ]] || "$KNNTOOLS" features "$data" --split test -o "$OUT/${data}_test.h5" -q
  for seed in $SEEDS; do
    for mode in $MODES; do
      for model in $MODELS; do
        tag="${data}_${model}_${mode}_s${seed}"
        [[ -f "$OUT/$tag.json" ]] && continue
        extra=()
        # the benchmarks (kNN and FFN; out-of-core: kNN on one B-row batch) once per (data, mode, seed)
        [[ "$model" != "${MODELS%% *}" ]] && extra+=(--no-baselines)
        [[ "$mode" == "ooc" ]] && extra+=(--out-of-core --batches "$BATCHES" --batch-size "$BATCH_SIZE")
        echo "== $tag" >&2
        "$KNNTOOLS" seq2knn "$OUT/${data}_train.h5" --model "$model" -k 5 --epochs "$EPOCHS" --seed "$seed" \
          "${extra[@]}" --eval "$OUT/${data}_test.h5" -o "$OUT/$tag.pt" --force --json -q > "$OUT/$tag.json.partial"
        mv "$OUT/$tag.json.partial" "$OUT/$tag.json"
      done
    done
  done
done
"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, statistics as st, sys
out = sys.argv[1]
rows = {}
for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    r = json.load(open(p))
    if r.get("command") != "seq2knn":
        continue
    data = os.path.basename(r["train"]).rsplit("_train", 1)[0]
    mode = "ooc" if r["mode"] == "out-of-core" else "full"
    for method, m in r["test"].items():
        key = (data, mode, method)
        rows.setdefault(key, {"f1": [], "acc": [], "knn_s": [], "train_s": []})
        rows[key]["f1"].append(m["macro_f1"]); rows[key]["acc"].append(m["accuracy"])
        if method == r["model"]:
            rows[key]["knn_s"].append(r["knn_target_seconds"]); rows[key]["train_s"].append(r["train_seconds"])
fmt = lambda v: f"{100 * st.mean(v):.2f}" + (f" ± {100 * st.stdev(v):.2f}" if len(v) > 1 else "")
lines = ["| data | targets | method | macro F1 (%) | accuracy (%) | kNN-target s | train s | runs |", "|---|---|---|---|---|---|---|---|"]
for (data, mode, method), v in sorted(rows.items()):
    t = lambda xs: f"{st.mean(xs):.1f}" if xs else "-"
    lines.append(f"| {data} | {mode} | {method} | {fmt(v['f1'])} | {fmt(v['acc'])} | {t(v['knn_s'])} | {t(v['train_s'])} | {len(v['f1'])} |")
open(os.path.join(out, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
