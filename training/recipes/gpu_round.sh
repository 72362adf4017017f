#!/usr/bin/env bash
# The testbed round as two GPU calls of under 10 minutes each (one H200), on top of testbed_round.sh.
# Small models leave the GPU mostly idle, so independent stages run side by side.
#
#   bash training/recipes/gpu_round.sh train OUT   # new reasoner leg | cold-start data, short-agent SFT
#   bash training/recipes/gpu_round.sh eval OUT    # long-agent SFT from the new reasoner; measure | demo
#
# `train` continues the shipped reasoner into $RUNS/assets-new while the cold-start data is built
# from training problems with the shipped base (which the new leg does not change) and the short
# agents are fine-tuned from that base. `eval` fine-tunes the long agents from the new reasoner,
# then measures the new assets (the testbed numbers) beside the demo with the SFT rows on
# the test split. Archives of everything needed to go on (and to ship) are written to OUT.
set -euo pipefail
part=${1:?usage: gpu_round.sh train|eval OUT}
out=${2:?usage: gpu_round.sh train|eval OUT}
export RUNS=${RUNS:-runs/round} DEVICE=${DEVICE:-cuda}
export N_TRAIN_PROBLEMS=${N_TRAIN_PROBLEMS:-500} N_DATA_ROLL=${N_DATA_ROLL:-8} DEMO_N=${DEMO_N:-500}
export REASONER_SECONDS=${REASONER_SECONDS:-330} SFT_ARGS=${SFT_ARGS:---lora --learning-rate 2e-3 --num-train-epochs 8}
recipe=training/recipes/testbed_round.sh
mkdir -p "$RUNS" "$out"
shipped=$(python3 -c 'from longshort.testbed.checkpoints import assets_dir; print(assets_dir())')

case $part in
train)
  [ -d "$RUNS/assets" ] || cp -r "$shipped" "$RUNS/assets"
  [ -d "$RUNS/assets-new" ] || cp -r "$shipped" "$RUNS/assets-new"
  (ASSETS=$RUNS/assets-new bash $recipe reasoner > "$RUNS/reasoner.log" 2>&1; echo "reasoner rc=$?") &
  bash $recipe coldstart sft-short > "$RUNS/cold.log" 2>&1 || { tail -n 40 "$RUNS/cold.log"; exit 1; }
  wait
  tar czf "$out/reasoner.tgz" -C "$RUNS" assets-new
  tar czf "$out/round-train.tgz" -C "$RUNS" coldstart reasoner.log cold.log \
    $(cd "$RUNS" && ls -d data-*/data.json data-*/dialogues.jsonl sft-*-short) ;;
eval)
  [ -d "$RUNS/data-paper/long" ] || for s in ${SOURCES:-paper significance random}; do  # a fresh machine
    longshort train data --analysis "$RUNS/coldstart" --out "$RUNS/data-$s" --source "$s" \
      --long-tokenizer "$RUNS/assets/reasoner" --short-tokenizer "$RUNS/assets/base" > /dev/null
  done
  ASSETS=$RUNS/assets-new bash $recipe sft-long
  (ASSETS=$RUNS/assets-new bash $recipe measure > "$RUNS/measure.log" 2>&1; echo "measure rc=$?") &
  ASSETS=$RUNS/assets-new bash $recipe demo 2>&1 | grep -v "Warn\|forward_call"
  wait
  cp "$RUNS/demo/demo.json" "$out/demo.json"; cp "$RUNS/demo/demo.png" "$out/demo.png"
  tar czf "$out/round-eval.tgz" -C "$RUNS" assets-new/manifest.json testbed.json measure.log \
    $(cd "$RUNS" && ls -d sft-*-long sft-*-long.log) ;;
*) echo "unknown part $part (train, eval)" >&2; exit 2 ;;
esac
