#!/usr/bin/env bash
# Continue training the bundled model on GPUs; sized for about 15 minutes on one H100.
#   bash scripts/train_gpu.sh                      # one GPU
#   NUM_GPUS=8 bash scripts/train_gpu.sh           # one node, eight GPUs (same code)
#   DATA=shared/utkface-train.npz VAL_DATA=shared/val bash scripts/train_gpu.sh   # faces from a pack
#   BAND_WEIGHTS=0-12=1,13-19=1,20-59=2,60+=3 bash scripts/train_gpu.sh          # age-aware mix (UTKFace names)
#   EXTRA="--perceptual-weight 1 --anchor-weight 10" bash scripts/train_gpu.sh    # more train arguments (last wins)
# Faces are decoded once into GPU memory and degraded there (lpipdiff/data.py); a pack is
# made with `python -m lpipdiff.training.data pack FOLDER FILE.npz`. Where diffusers is missing, wheels
# in .whl/ are installed to /tmp/site first (docs/TRAINING.md). The new weights land in
# $OUT/pipeline (fp16 safetensors); copy that folder over lpipdiff/bundled/lpipdiff-utkface-128 to
# ship them. Rerun with RESUME=latest to go on.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/utkface/train}
VAL_DATA=${VAL_DATA:-}
INIT=${INIT:-lpipdiff/bundled/lpipdiff-utkface-128}
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-12}
NUM_GPUS=${NUM_GPUS:-1}
PATCHES_PER_FACE=${PATCHES_PER_FACE:-4}
RESUME=${RESUME:-}
BAND_WEIGHTS=${BAND_WEIGHTS:-}
EXTRA=${EXTRA:-}
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m accelerate.commands.launch --num_processes "$NUM_GPUS" --mixed_precision bf16 -m lpipdiff.training.train \
  --data "$DATA" --output "$OUT" --init-from "$INIT" ${VAL_DATA:+--val-data "$VAL_DATA"} \
  --batch-size 256 --patches-per-face "$PATCHES_PER_FACE" --learning-rate 2e-4 --warmup-steps 200 \
  --ema-decay 0.9995 --max-minutes "$MINUTES" --mixed-precision bf16 \
  --checkpoint-every 1000 --validate-every 2000 --val-faces 16 --export-fp16 \
  ${BAND_WEIGHTS:+--band-weights "$BAND_WEIGHTS"} ${RESUME:+--resume "$RESUME"} $EXTRA
