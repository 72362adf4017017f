#!/usr/bin/env bash
# Retrain the agents from logged traces (README "Retrain from logged traces"), on one GPU in one call:
#   bash training/recipes/gpu_rft.sh OUT [N_PROBLEMS=2000] [K=8]
#
# 1. sample the shipped cold-start pair (longshort-sft) at T 0.7, K episodes per problem, on the first
#    N problems of the testbed's train split (`longshort eval --benchmarks testbed-train`, SHARDS processes),
#    every episode traced through LangSmith (langsmith_sample.py: recorded, exported, then imported), so
#    that two stores hold the same episodes: the eval's own and the imported LangSmith export;
# 2. retrain each agent from each store's correct, well-formed episodes (`train sft --from-traces`,
#    the cold start's LoRA settings, training/configs/sft/*-lora.yaml, from the shipped reasoner/base);
# 3. measure each retrained pair greedy on the 500 held-out problems.
# OUT gets rft.json (one row per path) and rft.tgz (the logs and the four adapters, to ship or to start RL
# from: `longshort train rl --long-model runs/rft/eval-long --short-model runs/rft/eval-short`).
# SFT_ARGS adds train sft options (e.g. --num-train-epochs 4); SAMPLE_SECONDS (330) bounds each sampling.
# DEVICE=cpu SFT_STEPS=1 EVAL_N=4 bash training/recipes/gpu_rft.sh OUT 4 2: a dry run on a laptop.
set -euo pipefail
out=${1:?usage: gpu_rft.sh OUT [N_PROBLEMS] [K]}
n=${2:-2000} k=${3:-8}
R=${RUNS:-runs/rft} DEVICE=${DEVICE:-cuda} SFT_STEPS=${SFT_STEPS:--1} EVAL_N=${EVAL_N:-500} SFT_ARGS=${SFT_ARGS:-}
export PYTHONUNBUFFERED=1
mkdir -p "$R" "$out"
cpu=(); [ "$DEVICE" = cpu ] && cpu=(--use-cpu)
shards=${SHARDS:-8}  # sampling processes side by side (the 4M-parameter models leave the GPU mostly idle)
# turns capped at 512 tokens and episodes at 1,024 (4x the SFT pair's mean): a rambling sample would otherwise
# hold its whole batch for up to 4,096 decode steps, and an episode cut by a cap is never selected anyway
sample=(--benchmarks testbed-train -k "$k" --temperature 0.7 --long-model longshort-sft --systems longshort
  --device "$DEVICE" --batch-size "${BATCH:-32}" --max-tokens-per-turn 512 --max-total-tokens 1024 --no-progress
  --store "$R/eval.sqlite")

t0=$(date +%s)
# Every shard is traced to its own loopback LangSmith endpoint, so both paths hold the same episodes: the eval's
# store directly, and the LangSmith export imported. At most SAMPLE_SECONDS (SIGINT: eval keeps every finished
# batch, the recorder writes what it got).
per=$(( (n + shards - 1) / shards ))
for ((i = 0; i < shards; i++)); do
  OMP_NUM_THREADS=1 timeout -s INT "${SAMPLE_SECONDS:-330}" python3 training/recipes/langsmith_sample.py \
    --export "$R/export-$i.jsonl" -- "${sample[@]}" --offset $((i * per)) --limit "$per" --out "$R/sample-$i" \
    > "$out/sample-$i.log" 2>&1 &
done
for pid in $(jobs -p); do wait "$pid" || echo "a sampling shard ended with $? (130: stopped at SAMPLE_SECONDS)"; done
for ((i = 0; i < shards; i++)); do
  longshort traces import --store "$R/langsmith.sqlite" --file "$R/export-$i.jsonl" 2>&1 | tee -a "$out/import.log"
done
t1=$(date +%s)

# each variant NAME:STORE:OPTIONS trains both agents from STORE; RFT_VARIANTS adds some, e.g. a rank-4 LoRA that
# fits the 20 MB asset cap: RFT_VARIANTS="eval-r4:eval:--lora-r 4 --lora-alpha 8"
variants=("eval:eval:" "langsmith:langsmith:")
[ -n "${RFT_VARIANTS:-}" ] && variants+=("$RFT_VARIANTS")
for v in "${variants[@]}"; do
  IFS=: read -r name store extra <<< "$v"
  for agent in long short; do
    # shellcheck disable=SC2086  # SFT_ARGS and a variant's options are lists of options
    longshort train sft --agent "$agent" --config "training/configs/sft/$agent-lora.yaml" --from-traces "$R/$store.sqlite" \
      --output-dir "$R/$name-$agent" --max-steps "$SFT_STEPS" "${cpu[@]}" $SFT_ARGS $extra > "$out/train-$name-$agent.log" 2>&1 &
  done
done
for pid in $(jobs -p); do wait "$pid" || { tail -n 30 "$out"/train-*.log; exit 1; }; done
t2=$(date +%s)

for v in "${variants[@]}"; do
  name=${v%%:*}
  longshort eval --benchmarks testbed --limit "$EVAL_N" --systems longshort --long-model "$R/$name-long" \
    --short-model "$R/$name-short" --device "$DEVICE" --no-progress --out "$R/$name-measure" > "$out/measure-$name.log" 2>&1 &
done
for pid in $(jobs -p); do wait "$pid" || { tail -n 20 "$out"/measure-*.log; exit 1; }; done
t3=$(date +%s)

python3 - "$R" "$out/rft.json" "$n" "$k" "$((t1 - t0))" "$((t2 - t1))" "$((t3 - t2))" "${variants[@]}" <<'EOF'
import glob, json, sys
from longshort.store import TraceStore
from longshort.provenance import run_metadata
R, dest, n, k, ts, tt, tm = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
items = [json.loads(line) for f in sorted(glob.glob(f"{R}/sample-*/items.jsonl")) for line in open(f)]  # shared
rows = []
for variant in sys.argv[8:]:
    path, store, extra = variant.split(":", 2)
    info = {a: json.load(open(f"{R}/{path}-{a}/sft_info.json")) for a in ("long", "short")}
    measured = json.load(open(f"{R}/{path}-measure/results.json"))["rows"][0]
    rows.append({
        "path": path, "store": store, "options": extra, "sampled_episodes": TraceStore(f"{R}/{store}.sqlite").count(),
        "sampled_problems": len({i["id"] for i in items}), "sampled_tokens": sum(i["tokens"]["total"] for i in items) / max(len(items), 1),
        "sampled_pass1": sum(bool(i.get("correct")) for i in items) / max(len(items), 1),
        "selected": info["long"]["traces"]["selected"], "dropped": info["long"]["traces"]["dropped"],
        "rows_used": {a: info[a]["rows_used"] for a in info}, "train_loss": {a: info[a]["train_loss"] for a in info},
        **{key: measured.get(key) for key in ("pass_at_1", "mean_tokens", "mean_tokens_long", "mean_tokens_short", "mean_turns", "n")},
    })
    print(path, {k: rows[-1][k] for k in ("sampled_episodes", "sampled_pass1", "selected", "pass_at_1", "mean_tokens")})
json.dump({"rows": rows, "n_problems": n, "k": k, "seconds": {"sample": ts, "train": tt, "measure": tm},
           **run_metadata()}, open(dest, "w"), indent=1)
EOF
mkdir -p "$R/logs" && mv "$out"/*.log "$R/logs/"  # OUT keeps few files: the logs travel in the archive
tar czf "$out/rft.tgz" -C "$R" --exclude='*/checkpoint-*' logs $(for v in "${variants[@]}"; do nm=${v%%:*}; echo "$nm-long $nm-short $nm-measure/results.json"; done)
ls -la "$out"
