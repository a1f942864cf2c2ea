#!/usr/bin/env bash
# Install knntools into ./.venv and run the main job: the all-methods comparison
# (noise → train → embed → index → dknn / lasenn / distill-knet / probe under four noise settings)
# on the bundled scikit-learn `digits` set. Results: runs/compare/results.{md,csv,png}.
#   ./run.sh                                   # digits (default, offline)
#   ./run.sh --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist --out runs/compare-fmnist
# Extra arguments go to examples/compare.py (see --help). Re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh .
exec .venv/bin/python examples/compare.py "$@"
