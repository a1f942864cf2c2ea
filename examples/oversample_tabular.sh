#!/usr/bin/env bash
# Xu & Klabjan §4 "Oversampling": V2VSLS's predicted neighbour vectors as synthetic minority samples,
# against SMOTE and ADASYN, judged by downstream classifiers (RF, FFN, gradient boosting) on a test set.
#
#   bash examples/oversample_tabular.sh              # churn and caravan (pip install 'knntools[tabular]')
#   TOY=1 bash examples/oversample_tabular.sh        # tiny CI run on breast-cancer
#
# Writes under $OUT: the split files, v2vsls_os.pt (trained with lam = 1.3, alpha = 3 as the paper
# recommends for oversampling), one balanced features file and JSON summary per method, oversample.md.
set -euo pipefail
KNNTOOLS=${KNNTOOLS:-knntools}
PYTHON=${PYTHON:-python}
OUT=${OUT:-oversample_results}
EPOCHS=${EPOCHS:-30}
SEED=${SEED:-0}
DATA=${DATA:-"churn caravan"}
CLASSIFIERS=${CLASSIFIERS:-"rf,ffn,gb"}
METHODS=${METHODS:-"v2vsls smote adasyn"}
if [[ "${TOY:-0}" == "1" ]]; then
  DATA="breast-cancer"; EPOCHS=2; CLASSIFIERS="logreg,knn"
fi
mkdir -p "$OUT"
for data in $DATA; do
  [[ -f "$OUT/${data}_train.h5" ]] || "$KNNTOOLS" features "$data" --split train -o "$OUT/${data}_train.h5" -q
  [[ -f "$OUT/${data}_test.h5" ]] || "$KNNTOOLS" features "$data" --split test -o "$OUT/${data}_test.h5" -q
  ck="$OUT/${data}_v2vsls_os.pt"
  [[ -f "$ck" ]] || "$KNNTOOLS" seq2knn "$OUT/${data}_train.h5" --model v2vsls --lam 1.3 --alpha 3 -k 5 --epochs "$EPOCHS" \
      --seed "$SEED" --eval "$OUT/${data}_test.h5" --no-baselines -o "$ck" --json -q > "$OUT/${data}_v2vsls_os.train.json"
  for method in $METHODS; do
    tag="${data}_${method}_s${SEED}"
    [[ -f "$OUT/$tag.json" ]] && continue
    model=()
    [[ "$method" == "v2vsls" ]] && model=(--model "$ck")
    echo "== $tag" >&2
    "$KNNTOOLS" oversample "$OUT/${data}_train.h5" --method "$method" "${model[@]}" --seed "$SEED" \
      --eval "$OUT/${data}_test.h5" --classifiers "$CLASSIFIERS" -o "$OUT/$tag.h5" --force --json -q > "$OUT/$tag.json.partial"
    mv "$OUT/$tag.json.partial" "$OUT/$tag.json"
  done
done
"$PYTHON" - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
table = {}
counts = {}
for p in sorted(glob.glob(os.path.join(out, "*_s*.json"))):
    r = json.load(open(p))
    if r.get("command") != "oversample" or "downstream" not in r:
        continue
    data = os.path.basename(p).split("_")[0]
    counts[(data, r["method"])] = (r["counts_before"], r["counts_after"])
    for train_set, per in r["downstream"].items():
        for clf, m in per.items():
            table[(data, clf, train_set)] = m["macro_f1"]
methods = ["original", "smote", "adasyn", "v2vsls", "mnknn-vec"]
lines = ["| data | classifier | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
for data, clf in sorted({(d, c) for d, c, _ in table}):
    vals = [table.get((data, clf, m)) for m in methods]
    best = max(v for v in vals if v is not None)
    cells = ["-" if v is None else (f"**{100 * v:.2f}**" if v == best else f"{100 * v:.2f}") for v in vals]
    lines.append(f"| {data} | {clf} | " + " | ".join(cells) + " |")
lines.append("")
lines.append("| data | method | class counts before | after |")
lines.append("|---|---|---|---|")
for (data, method), (b, a) in sorted(counts.items()):
    lines.append(f"| {data} | {method} | {b} | {a} |")
open(os.path.join(out, "oversample.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
