#!/usr/bin/env bash
# Issue 20's recipe ablation: every arm from the same warm start and pool, same seeds, same steps,
# one after another on one thread, each then measured on the diagnostic ladder.
#
#   STEPS=350 scripts/basemodel_ablation.sh work/abl            # all arms
#   ARMS="control abc" STEPS=350 scripts/basemodel_ablation.sh work/abl
#
# Writes work/abl/<arm>/ (training work folder, export/, train.log, ladder.{json,md}).
# docs/basemodel_recipe.md is made from those by scripts/basemodel_recipe_table.py.
set -euo pipefail
ROOT=${1:-work/abl}
STEPS=${STEPS:-350}
POOL=${POOL:-8192}
PAIRS=${PAIRS:-4096}
ARMS=${ARMS:-"control abc b a c"}
LADDER_ARGS=${LADDER_ARGS:-"--samples-per-value 2 --probe-images 6"}
PY=${PY:-python}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(--threads 1 --diffusion-batch 32 --lr 3e-4 --warmup 50 --ema-decay 0.99 --sample-every 0 --snapshot-every 0
        --pool-size "$POOL" --pool-masks --pool-pairs "$PAIRS")

declare -A FLAGS=(
  [control]=""
  [a]="--mask-weight 1"
  [b]="--text-aux-weight 0.1"
  [c]="--paired-fraction 0.5"
  [abc]="--mask-weight 1 --text-aux-weight 0.1 --paired-fraction 0.5"
  [b03]="--text-aux-weight 0.03"
  [abc03]="--mask-weight 1 --text-aux-weight 0.03 --paired-fraction 0.5"
)

mkdir -p "$ROOT"
if [ ! -f "$ROOT/base/pool/latents.safetensors" ]; then
  # One warm start and one pool (masks and pairs included), shared by every arm.
  $PY scripts/train_basemodel.py --work "$ROOT/base" --warm-start embedded --stage pool "${COMMON[@]}" \
    --diffusion-steps 4000 > "$ROOT/base.log" 2>&1
  rm -rf "$ROOT/base/pool/parts"
fi
START=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$ROOT/base/warm_start.json")
for arm in $ARMS; do
  dir="$ROOT/$arm"
  if [ ! -f "$dir/ladder.json" ]; then
    [ -d "$dir" ] || cp -r "$ROOT/base" "$dir"
    # shellcheck disable=SC2086
    $PY scripts/train_basemodel.py --work "$dir" --stage diffusion "${COMMON[@]}" --diffusion-steps $((START + STEPS)) \
      ${FLAGS[$arm]} > "$dir/train.log" 2>&1
    $PY scripts/train_basemodel.py --work "$dir" --stage export --export-to "$dir/export" "${COMMON[@]}" \
      --diffusion-steps $((START + STEPS)) ${FLAGS[$arm]} >> "$dir/train.log" 2>&1
    $PY scripts/basemodel_ladder.py --threads 1 --model "$dir/export" --out "$dir/ladder" --title "Ladder of arm $arm" ${LADDER_ARGS:-} \
      > "$dir/ladder.log" 2>&1
  fi
  echo "$(date -u +%H:%M) arm $arm done"
done
