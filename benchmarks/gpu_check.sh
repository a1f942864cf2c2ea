#!/usr/bin/env bash
# One-GPU check of knntools' CUDA paths (issue 15), about 3-4 minutes on one H100/H200-class GPU.
#
#   benchmarks/gpu_check.sh FMNIST_DIR [OUT_DIR] [--epochs N] [--k K]
#
# FMNIST_DIR holds the Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...); the machine needs
# no internet and no hnswlib: the project is used from this checkout through PYTHONPATH (no pip
# install, no dependency resolution). Needs python3 with torch (CUDA), torchvision, numpy, h5py,
# typer, rich, scikit-learn. Writes OUT_DIR/gpu_check.md (default gpu_check_out/) and exits 1 when a
# check fails (train accuracy CUDA vs CPU within 0.5 points, exact search on CUDA = CPU neighbours,
# dknn CUDA accuracy = CPU accuracy).
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 FMNIST_DIR [OUT_DIR] [--epochs N] [--k K]  (FMNIST_DIR: folder with the Fashion-MNIST IDX files)" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
