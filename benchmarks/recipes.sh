#!/usr/bin/env bash
# Equal-budget comparison of training recipes: epsilon vs v-prediction (both residual)
# and plain vs residual diffusion (both v-prediction).
# Each run trains for STEPS steps (equal compute; wall time is noisy on a shared
# machine), then samples the same 16 val faces
# (alternating moderate/severe, seeded) through the real pipeline and logs PSNR and
# dlib identity distance to runs/recipes/NAME/validation.jsonl.
set -euo pipefail
STEPS=${STEPS:-600}
DATA=${DATA:-../shared/data/utkface/train}
OUT=${OUT:-runs/recipes}
for recipe in "epsilon --residual" "v_prediction --no-residual" "v_prediction --residual"; do
  set -- $recipe
  name="$1-${2#--}"
  python -m lpipdiff.training.train --data "$DATA" --output "$OUT/$name" --prediction-type "$1" "$2" \
    --max-steps "$STEPS" --validate-every 1000000 --val-faces 16 --val-steps 20 \
    --checkpoint-every 1000000 --num-workers 1 --seed 0
done
