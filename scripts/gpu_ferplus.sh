#!/usr/bin/env bash
# One prepared GPU check (issue: pipeline core, and the FER+ results issue): SGM ResNet18 on the full
# FER+ train split for a fixed budget, then kNN accuracy and NMI on the FER+ test split.
#
# Needs the FER+ pixels and labels inside the repo (../shared does not travel to a GPU machine):
#   mkdir -p .devdata/fer && cp ../shared/data/fer/ferplus_webp.npz .devdata/fer/ &&
#   for f in FER2013Train FER2013Valid FER2013Test; do mkdir -p .devdata/fer/$f; cp ../shared/data/fer/$f/label.csv .devdata/fer/$f/; done
# (.devdata/ is git-ignored; name it in the device tool's `carry`.)
#
# Usage: bash scripts/gpu_ferplus.sh [EPOCHS] [OUT]; writes OUT/train.log and prints the metrics table.
set -euo pipefail
EPOCHS=${1:-30}
OUT=${2:-${OUT:-/tmp}/fer-sgm-r18}
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
rm -rf "$OUT"
start=$(date +%s)
python -m pipeline train --data ferplus:.devdata/fer --backbone resnet18 --loss sgm --epochs "$EPOCHS" \
    --per-class 32 --lr 1e-3 --out "$OUT" --no-progress-bar 2>&1 | tee "$OUT.log"
echo "wall seconds: $(( $(date +%s) - start ))"
python -m pipeline evaluate "$OUT"
