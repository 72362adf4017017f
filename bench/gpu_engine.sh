#!/usr/bin/env bash
# Issue 19's GPU measurements (one H200; about 20 minutes for every part, so run them a few at a time): the graph vs transformers'
# batched paths per N, and the 7B-shaped decode against the bandwidth bound. Each part writes its
# own JSON into OUT (default results/), so a part cut short by its time limit loses only itself.
#   bash bench/gpu_engine.sh [OUT] [PARTS]     PARTS: any of main small big baselines bandwidth outcomes
set -u
out=${1:-results}
parts=${2:-"main small big baselines bandwidth"}
mkdir -p "$out"
common=(--testbed --temperature 0 --max-tokens-per-turn 2048 --max-total-tokens 4096 --workers process)
for part in $parts; do
  case $part in
    main) timeout "${MAIN_S:-420}" python3 -m bench.throughput "${common[@]}" --n "${MAIN_N:-256,64}" --repeats 5 --cuda-graphs both \
            --baselines generate --out "$out/throughput-testbed-graphs-nvidia-h200.json" ;;
    small) timeout 150 python3 -m bench.throughput "${common[@]}" --n 1,8 --repeats 5 --cuda-graphs both \
            --baselines generate --out "$out/throughput-testbed-graphs-small-nvidia-h200.json" ;;
    big) timeout 150 python3 -m bench.throughput "${common[@]}" --n 1024 --repeats 5 --cuda-graphs both \
            --max-batch-size 1024 --baselines generate --out "$out/throughput-testbed-graphs-1024-nvidia-h200.json" ;;
    baselines) timeout "${BASELINES_S:-300}" python3 -m bench.throughput "${common[@]}" --n "${BASELINES_N:-64,256}" --repeats 1 --cuda-graphs on \
            --baselines generate,static,continuous --continuous-timeout 120 --out "$out/throughput-testbed-baselines-nvidia-h200.json" ;;
    bandwidth) timeout 150 python3 -m bench.decode_bandwidth --n 64 --new-tokens 128 --repeats 5 \
            --out "$out/decode-bandwidth-qwen7b-shape-nvidia-h200.json" ;;
    outcomes)  # 500 greedy testbed episodes with and without CUDA graphs, side by side: what differs
      for g in 0 1; do
        LONGSHORT_CUDA_GRAPHS=$g timeout 400 longshort eval --benchmarks testbed --limit "${OUTCOMES_N:-500}" --systems longshort \
          --device "${DEVICE:-cuda}" --no-progress --out "$out/outcomes-graphs$g" > "$out/outcomes-graphs$g.log" 2>&1 &
      done
      wait
      python3 - "$out" <<'PY'
import json, sys
from longshort.provenance import write_json_atomic
out = sys.argv[1]
runs = [{(r["id"], r.get("sample", 0)): r for r in map(json.loads, open(f"{out}/outcomes-graphs{g}/items.jsonl"))} for g in (0, 1)]
keys = sorted(set(runs[0]) & set(runs[1]))
outcome = lambda r: (r["answer"], r["status"], r["turns"], r["tokens"]["total"])  # noqa: E731
differ = [k for k in keys if outcome(runs[0][k]) != outcome(runs[1][k])]
summary = {"problems": len(keys), "outcomes_differ": len(differ),
           "correct": [sum(bool(r.get("correct")) for k, r in run.items() if k in keys) for run in runs],
           "tokens": [sum(r["tokens"]["total"] for k, r in run.items() if k in keys) / max(1, len(keys)) for run in runs],
           "first_differing": [str(k) for k in differ[:10]], "arms": ["LONGSHORT_CUDA_GRAPHS=0", "LONGSHORT_CUDA_GRAPHS=1"]}
print(summary)
write_json_atomic(summary, f"{out}/outcomes-graphs-nvidia-h200.json")
PY
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  echo "== $part: exit $?" >&2
done
