#!/usr/bin/env bash
# The paper's pipeline on the testbed, stage by stage, on one GPU (every stage resumes or redoes
# only its own outputs). Sizes are the GPU recipe's; override them for a CPU dry run, e.g.
#   N_EVAL=2 N_ROLL=2 N_TRAIN_PROBLEMS=4 N_DATA_ROLL=2 SFT_STEPS=1 DEVICE=cpu BASE_SECONDS=5 \
#     bash training/recipes/testbed_round.sh base analysis coldstart sft demo
#
#   base       retrain the base (short + switch + gapped-selection traces); keep the shipped reasoner
#   analysis   thought analysis on held-out problems: AUROC, functional check, figures (issue 5)
#   coldstart  cold-start data from training problems, three selection sources (issue 7)
#   sft        fine-tune both agents on each source's data
#   demo       the demo table with the SFT rows
set -euo pipefail
RUNS=${RUNS:-runs/round}
DEVICE=${DEVICE:-cuda}
N_EVAL=${N_EVAL:-100}                     # held-out problems for the analysis
N_ROLL=${N_ROLL:-128}                     # rollouts per prefix for the analysis
N_TRAIN_PROBLEMS=${N_TRAIN_PROBLEMS:-2000}  # training problems for the cold-start data
N_DATA_ROLL=${N_DATA_ROLL:-8}             # rollouts per prefix for data building (paper: 5-8)
SFT_STEPS=${SFT_STEPS:--1}                # -1: the YAML's epochs
BASE_SECONDS=${BASE_SECONDS:-600}
DEMO_N=${DEMO_N:-500}
ASSETS=$RUNS/assets
mkdir -p "$RUNS"
[ -d "$ASSETS" ] || cp -r "$(python -c 'from longshort.training.testbed.checkpoints import assets_dir; print(assets_dir())')" "$ASSETS"

for stage in "$@"; do
  case $stage in
  base)
    longshort testbed build --models base --out "$RUNS/testbed" --assets "$ASSETS" --max-seconds "$BASE_SECONDS" \
      --steps 100000 --n-train 12000 --eval-n "$N_EVAL" --results "$RUNS/testbed.json" ;;
  analysis)
    longshort analyze chunk --testbed --n "$N_EVAL" --out "$RUNS/analysis"
    longshort analyze rollout --dir "$RUNS/analysis" --model "$ASSETS/base" --device "$DEVICE" --n-rollouts "$N_ROLL"
    longshort analyze score --dir "$RUNS/analysis"
    longshort analyze report --dir "$RUNS/analysis" --model "$ASSETS/base" --device "$DEVICE" ;;
  coldstart)
    longshort analyze chunk --testbed --split train --n "$N_TRAIN_PROBLEMS" --out "$RUNS/coldstart"
    longshort analyze rollout --dir "$RUNS/coldstart" --model "$ASSETS/base" --device "$DEVICE" --n-rollouts "$N_DATA_ROLL"
    for source in paper significance random; do
      longshort train data --analysis "$RUNS/coldstart" --out "$RUNS/data-$source" --source "$source" \
        --long-tokenizer "$ASSETS/reasoner" --short-tokenizer "$ASSETS/base"
    done ;;
  sft)
    for source in paper significance random; do
      longshort train sft --agent long --data "$RUNS/data-$source" --model "$ASSETS/reasoner" \
        --out "$RUNS/sft-$source-long" --max-steps "$SFT_STEPS" --device "$DEVICE"
      longshort train sft --agent short --data "$RUNS/data-$source" --model "$ASSETS/base" \
        --out "$RUNS/sft-$source-short" --max-steps "$SFT_STEPS" --device "$DEVICE"
    done ;;
  demo)
    pairs=()
    for source in paper significance random; do
      name=longshort-sft; [ "$source" = paper ] || name=longshort-sft-$source
      pairs+=(--pair "$name=$RUNS/sft-$source-long,$RUNS/sft-$source-short")
    done
    longshort demo --n "$DEMO_N" --device "$DEVICE" --out "$RUNS/demo" --checkpoints "$ASSETS" "${pairs[@]}" ;;
  *) echo "unknown stage $stage (base analysis coldstart sft demo)" >&2; exit 2 ;;
  esac
done
