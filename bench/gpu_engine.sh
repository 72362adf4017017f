#!/usr/bin/env bash
# Issue 19's GPU measurements (one H200; about 20 minutes for every part, so run them a few at a time): the graph vs transformers'
# batched paths per N, and the 7B-shaped decode against the bandwidth bound. Each part writes its
# own JSON into OUT (default results/), so a part cut short by its time limit loses only itself.
#   bash bench/gpu_engine.sh [OUT] [PARTS]     PARTS: any of main small big baselines bandwidth
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
            --baselines generate,static,continuous --out "$out/throughput-testbed-baselines-nvidia-h200.json" ;;
    bandwidth) timeout 150 python3 -m bench.decode_bandwidth --n 64 --new-tokens 128 --repeats 5 \
            --out "$out/decode-bandwidth-qwen7b-shape-nvidia-h200.json" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  echo "== $part: exit $?" >&2
done
