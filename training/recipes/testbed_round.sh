#!/usr/bin/env bash
# The paper's pipeline on the testbed, stage by stage, on one GPU (every stage resumes or redoes
# only its own outputs). Sizes are the GPU recipe's; override them for a CPU dry run, e.g.
#   N_EVAL=2 N_ROLL=2 N_TRAIN_PROBLEMS=4 N_DATA_ROLL=2 SFT_STEPS=1 DEVICE=cpu BASE_SECONDS=5 \
#     bash training/recipes/testbed_round.sh base analysis coldstart sft demo
#
#   base       retrain the base (short + switch + gapped-selection traces); keep the shipped reasoner
#   analysis   thought analysis on held-out problems: AUROC, functional check, figures (issue 5)
#   coldstart  cold-start data from training problems, three selection sources (issue 7)
#   reasoner   continue the shipped reasoner for REASONER_SECONDS (a new leg; measure it with `measure`)
#   measure    the numbers for $ASSETS (long-only, short-only, prompt-only, oracle; 500 problems)
#   sft        fine-tune both agents on each source's data (= sft-short then sft-long)
#   sft-short  the short agents only (from the base), the three sources in parallel
#   sft-long   the long agents only (from the reasoner), the three sources in parallel
#   demo       the demo table with the SFT rows
# SFT_ARGS adds options to every `longshort train sft`, e.g. SFT_ARGS="--lora --learning-rate 2e-3 --num-train-epochs 8"
# (the settings of the shipped pair, training/configs/sft/*-lora.yaml). DEVICE=cpu trains with --use-cpu.
set -euo pipefail
RUNS=${RUNS:-runs/round}
DEVICE=${DEVICE:-cuda}
N_EVAL=${N_EVAL:-100}                     # held-out problems for the analysis
N_ROLL=${N_ROLL:-128}                     # rollouts per prefix for the analysis
N_TRAIN_PROBLEMS=${N_TRAIN_PROBLEMS:-500}   # training problems for the cold-start data (the shipped round: 500)
N_DATA_ROLL=${N_DATA_ROLL:-8}             # rollouts per prefix for data building (paper: 5-8)
SFT_STEPS=${SFT_STEPS:--1}                # -1: the YAML's epochs
BASE_SECONDS=${BASE_SECONDS:-600}
REASONER_SECONDS=${REASONER_SECONDS:-400}
SFT_ARGS=${SFT_ARGS:-}
SOURCES=${SOURCES:-paper significance random}
DEMO_N=${DEMO_N:-500}
ASSETS=${ASSETS:-$RUNS/assets}
mkdir -p "$RUNS"
[ -d "$ASSETS" ] || cp -r "$(python -c 'from longshort.testbed.checkpoints import assets_dir; print(assets_dir())')" "$ASSETS"

# one agent's SFT for every source at once (small models leave the GPU mostly idle), failing if any fails
sft_agent() {
  local agent=$1 init=$2 pids=() source cpu=()
  [ "$DEVICE" = cpu ] && cpu=(--use-cpu)  # TRL's use_cpu; otherwise CUDA when available
  for source in $SOURCES; do
    # shellcheck disable=SC2086
    longshort train sft --agent "$agent" --data "$RUNS/data-$source" --model "$init" \
      --output-dir "$RUNS/sft-$source-$agent" --max-steps "$SFT_STEPS" "${cpu[@]}" $SFT_ARGS \
      > "$RUNS/sft-$source-$agent.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || { tail -n 30 "$RUNS"/sft-*-"$agent".log >&2; return 1; }; done
}

for stage in "$@"; do
  case $stage in
  reasoner)
    longshort testbed build --models reasoner --init "$ASSETS" --assets "$ASSETS" --out "$RUNS/testbed" \
      --seed "${REASONER_SEED:-2}" --lr "${REASONER_LR:-3e-4}" --n-train 12000 --max-seconds "$REASONER_SECONDS" \
      --eval-n 0 ;;
  measure)
    longshort testbed measure --assets "$ASSETS" --eval-n "$DEMO_N" --device "$DEVICE" --results "$RUNS/testbed.json" ;;
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
    for source in $SOURCES; do
      longshort train data --analysis "$RUNS/coldstart" --out "$RUNS/data-$source" --source "$source" \
        --long-tokenizer "$ASSETS/reasoner" --short-tokenizer "$ASSETS/base"
    done ;;
  sft) sft_agent short "$ASSETS/base" && sft_agent long "$ASSETS/reasoner" ;;
  sft-short) sft_agent short "$ASSETS/base" ;;
  sft-long) sft_agent long "$ASSETS/reasoner" ;;
  demo)
    pairs=()
    for source in $SOURCES; do
      name=longshort-sft; [ "$source" = paper ] || name=longshort-sft-$source
      pairs+=(--pair "$name=$RUNS/sft-$source-long,$RUNS/sft-$source-short")
    done
    longshort demo --n "$DEMO_N" --device "$DEVICE" --out "$RUNS/demo" --checkpoints "$ASSETS" "${pairs[@]}" ;;
  *) echo "unknown stage $stage (base reasoner measure analysis coldstart sft sft-short sft-long demo)" >&2; exit 2 ;;
  esac
done
