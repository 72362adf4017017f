#!/usr/bin/env bash
# Retrain the agents from logged traces (README "Retrain from logged traces"), on one GPU in one call:
#   bash training/recipes/gpu_rft.sh OUT [N_PROBLEMS=2000] [K=8]
#
# 1. sample the shipped cold-start pair (longshort-sft) at T 0.7, K episodes per problem, on the first
#    N problems of the testbed's train split, twice side by side: through `longshort eval` (its trace
#    store) and through LangSmith tracing (langsmith_sample.py: recorded, exported, then imported);
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
sample=(--benchmarks testbed-train --limit "$n" -k "$k" --temperature 0.7 --long-model longshort-sft
  --systems longshort --device "$DEVICE" --batch-size "${BATCH:-64}" --no-progress)

t0=$(date +%s)
# at most SAMPLE_SECONDS each (SIGINT: eval keeps every finished batch, the recorder writes what it got)
timeout -s INT "${SAMPLE_SECONDS:-330}" longshort eval "${sample[@]}" --out "$R/eval-sample" > "$out/sample-eval.log" 2>&1 &
timeout -s INT "${SAMPLE_SECONDS:-330}" python3 training/recipes/langsmith_sample.py --export "$R/export.jsonl" -- "${sample[@]}" --out "$R/ls-sample" \
  > "$out/sample-langsmith.log" 2>&1 &
for pid in $(jobs -p); do wait "$pid" || echo "sampling ended with $? (130: stopped at SAMPLE_SECONDS)"; done
longshort traces import --store "$R/langsmith.sqlite" --file "$R/export.jsonl" 2>&1 | tee "$out/import.log"
cp "$R/eval-sample/traces.sqlite" "$R/eval.sqlite"
t1=$(date +%s)

for path in eval langsmith; do
  for agent in long short; do
    longshort train sft --agent "$agent" --config "training/configs/sft/$agent-lora.yaml" --from-traces "$R/$path.sqlite" \
      --output-dir "$R/$path-$agent" --max-steps "$SFT_STEPS" "${cpu[@]}" $SFT_ARGS > "$out/train-$path-$agent.log" 2>&1 &
  done
done
for pid in $(jobs -p); do wait "$pid" || { tail -n 30 "$out"/train-*.log; exit 1; }; done
t2=$(date +%s)

for path in eval langsmith; do
  longshort eval --benchmarks testbed --limit "$EVAL_N" --systems longshort --long-model "$R/$path-long" \
    --short-model "$R/$path-short" --device "$DEVICE" --no-progress --out "$R/$path-measure" > "$out/measure-$path.log" 2>&1 &
done
for pid in $(jobs -p); do wait "$pid" || { tail -n 20 "$out"/measure-*.log; exit 1; }; done
t3=$(date +%s)

python3 - "$R" "$out/rft.json" "$n" "$k" "$((t1 - t0))" "$((t2 - t1))" "$((t3 - t2))" <<'EOF'
import json, sys
from longshort.store import TraceStore
from longshort.provenance import run_metadata
R, dest, n, k, ts, tt, tm = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
rows = []
for path in ("eval", "langsmith"):
    info = {a: json.load(open(f"{R}/{path}-{a}/sft_info.json")) for a in ("long", "short")}
    measured = json.load(open(f"{R}/{path}-measure/results.json"))["rows"][0]
    items = [json.loads(line) for line in open(f"{R}/{'eval' if path == 'eval' else 'ls'}-sample/items.jsonl")]
    rows.append({
        "path": path, "sampled_episodes": TraceStore(f"{R}/{path}.sqlite").count(),
        "sampled_problems": len({i["id"] for i in items}),
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
tar czf "$out/rft.tgz" -C "$R" --exclude='*/checkpoint-*' logs eval-long eval-short langsmith-long langsmith-short \
  eval-measure/results.json langsmith-measure/results.json
ls -la "$out"
