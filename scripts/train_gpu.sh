#!/usr/bin/env bash
# Continue training the bundled model on GPUs; sized for about 15 minutes on one H100.
#   bash scripts/train_gpu.sh                      # one GPU
#   NUM_GPUS=8 bash scripts/train_gpu.sh           # one node, eight GPUs (same code)
# The new weights land in $OUT/pipeline (fp16 safetensors); copy that folder over
# checkpoints/lpipdiff-utkface-128 to ship them. Rerun with RESUME=latest to go on.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/utkface/train}
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-12}
NUM_GPUS=${NUM_GPUS:-1}
RESUME=${RESUME:-}
accelerate launch --num_processes "$NUM_GPUS" --mixed_precision bf16 -m lpipdiff.train \
  --data "$DATA" --output "$OUT" --init-from checkpoints/lpipdiff-utkface-128 \
  --batch-size 256 --learning-rate 2e-4 --warmup-steps 200 --ema-decay 0.9995 \
  --max-minutes "$MINUTES" --num-workers 14 --mixed-precision bf16 \
  --checkpoint-every 1000 --validate-every 2000 --val-faces 16 --export-fp16 \
  ${RESUME:+--resume "$RESUME"}
