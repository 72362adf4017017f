#!/usr/bin/env bash
# The RL round on one H200 in device calls of under 10 minutes each (a killed run resumes: state travels as a tgz).
#   bash training/recipes/gpu_rl.sh bench OUT                 # bench/rl_step.py: graph vs plain GRPO, per trained token
#   bash training/recipes/gpu_rl.sh rl OUT SECONDS [ARGS…]    # run or resume `longshort train rl` for at most SECONDS,
#                                                             # then pack runs/rl into OUT/rl-state.tgz (put it back
#                                                             # in runs/rl-state.tgz to continue on a fresh machine)
#   bash training/recipes/gpu_rl.sh sweep OUT SECONDS NAME='ARGS' [NAME='ARGS'…]
#                                                             # several runs side by side on one GPU (the 4M-parameter
#                                                             # models leave it mostly idle), each in runs/NAME, resumable;
#                                                             # OUT/NAME.rounds.json, .log and .png per run; put
#                                                             # OUT/NAME-state.tgz back in runs/ to continue
set -euo pipefail
stage=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRL_EXPERIMENTAL_SILENCE=1
case "$stage" in
  bench)
    python3 -m bench.rl_step --steps 12 --warmup 2 --num-generations 8 --batch 64 \
      --out "$out/rl-step-nvidia-h200.json" 2>&1 | grep -v Warning | tee "$out/rl-step.log" | tail -5 ;;
  rl)
    seconds=$3; shift 3
    if [ -f runs/rl-state.tgz ] && [ ! -d runs/rl ]; then mkdir -p runs && tar xzf runs/rl-state.tgz -C runs; fi
    set +e
    timeout -s KILL "$seconds" python3 -m longshort.cli train rl --config training/configs/rl/testbed.yaml "$@" \
      > "$out/rl.log" 2>&1
    echo "train rl exit $?" | tee -a "$out/rl.log"
    set -e
    grep -v "Warning\|warn(" "$out/rl.log" | grep -E "round|accuracy|Error|error" | tail -20 || true
    # what a resume needs: rounds.json, each round's last checkpoint and final adapter (the merged SFT and
    # partner models are rebuilt from the shipped assets; the trace store stays on the machine, too big to move)
    tar czf "$out/rl-state.tgz" -C runs --exclude=rl/sft --exclude='rl/rounds/*/merged' --exclude='rl/traces.sqlite*' rl
    python3 -c "from longshort.store import TraceStore; s = TraceStore('runs/rl/traces.sqlite'); print('trace store:', s.count(), 'episodes')" || true
    cp runs/rl/rounds.json "$out/" 2>/dev/null || true
    ls -la "$out" ;;
  sweep)
    seconds=$3; shift 3
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
    for spec in "$@"; do
      name=${spec%%=*} args=${spec#*=}
      if [ -f "runs/$name-state.tgz" ] && [ ! -d "runs/$name" ]; then tar xzf "runs/$name-state.tgz" -C runs; fi  # resume
      # shellcheck disable=SC2086  # ARGS is a list of options
      (timeout -s KILL "$seconds" python3 -m longshort.cli train rl --config training/configs/rl/testbed.yaml \
        --output-dir "runs/$name" $args > "$out/$name.log" 2>&1; echo "train rl $name exit $?" >> "$out/$name.log") &
    done
    wait
    for spec in "$@"; do
      name=${spec%%=*}
      tail -n 1 "$out/$name.log"
      cp "runs/$name/rounds.json" "$out/$name.rounds.json" 2>/dev/null || true
      for png in runs/"$name"/rounds/*/training.png; do [ -f "$png" ] && cp "$png" "$out/$name.$(basename "$(dirname "$png")").png"; done
      for st in runs/"$name"/rounds/*/checkpoint-*/trainer_state.json; do  # the per-step log of each round
        [ -f "$st" ] && cp "$st" "$out/$name.$(basename "$(dirname "$(dirname "$st")")").trainer_state.json"
      done
      tar czf "$out/$name-state.tgz" -C runs --exclude="$name/sft" --exclude="$name/rounds/*/merged" \
        --exclude="$name/traces.sqlite*" "$name" 2>/dev/null || true  # to resume on a fresh machine
      python3 -c "import json,sys; [print(sys.argv[1], r['round'], r['accuracy'], round(r['mean_tokens'])) for r in json.load(open(sys.argv[2]))['rounds']]" \
        "$name" "runs/$name/rounds.json" 2>/dev/null || true
    done ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
