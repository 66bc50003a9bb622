#!/usr/bin/env bash
# The one GPU check (issue 11): everything a GPU session must show, in at most ~10 minutes on one
# H100/H200, with one JSON and one table: FER+ SGM ResNet18 with test kNN(11) accuracy and NMI at
# fixed training wall-clock checkpoints, train-step and embedding throughput against the bare model,
# torch.compile, and the full-size mislabel AP with 2-fold cross-fit. Each stage records its own
# failure in the JSON and the next one runs; a global budget bounds the whole (bench/gpu_check.py).
#
# FER_DIR needs ferplus_webp.npz (or the PNGs), FER2013Train|Valid|Test/label.csv and
# fer2013_original_labels.csv; nothing is downloaded. ../shared does not travel to a GPU machine:
#   mkdir -p .devdata/fer && cp ../shared/data/fer/{ferplus_webp.npz,fer2013_original_labels.csv} .devdata/fer/ &&
#   for f in FER2013Train FER2013Valid FER2013Test; do mkdir -p .devdata/fer/$f; cp ../shared/data/fer/$f/label.csv .devdata/fer/$f/; done
# (.devdata/ is git-ignored; name it in the device tool's `carry`.)
#
# Usage: bash scripts/gpu_check.sh FER_DIR [OUT_JSON] [extra options of python -m bench.gpu_check]
#        bash scripts/gpu_check.sh .devdata/fer "$OUT/gpu_check.json"
#        bash scripts/gpu_check.sh ../shared/data/fer /tmp/gc.json --tiny      # the CPU rehearsal
set -uo pipefail
FER_DIR=${1:?usage: scripts/gpu_check.sh FER_DIR [OUT_JSON] [options]}
OUT_JSON=${2:-${OUT:-.}/gpu_check.json}
shift $(( $# >= 2 ? 2 : 1 ))
FER_DIR=$(realpath -m "$FER_DIR"); OUT_JSON=$(realpath -m "$OUT_JSON")
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python -m bench.gpu_check "$FER_DIR" --out "$OUT_JSON" "$@"
