#!/usr/bin/env bash
# One-epoch accuracy with noprop-rs's fast CPU kernels against candle's
# reference ops (NOPROP_KERNELS=candle): same seed, same data, the
# `noprop` trainer; prints one line per run and the last metrics.jsonl line.
#
#   cargo build --release -p noprop-train
#   bench/reference_ops_accuracy.sh [OUT_DIR]     # default runs/reference-ops
#
# FM and CT train one epoch on the first 10,000 training images, DT (ten
# blocks per minibatch, ~6x slower with candle's ops) on the first 3,000;
# each is tested on all 10,000 test images (CT/FM: 100 Euler steps).
set -u
out=${1:-runs/reference-ops}
cd "$(dirname "$0")/.."
bin=target/release/noprop
[ -x "$bin" ] || { echo "build first: cargo build --release -p noprop-train" >&2; exit 2; }
mkdir -p "$out"
run() { # variant train_limit backend
  local v=$1 n=$2 k=$3 dir="$out/$1-$3"
  rm -rf "$dir"
  local start end rc
  start=$(date +%s.%N)
  NOPROP_KERNELS=$k CANDLE_NUM_THREADS=1 "$bin" train --variant "$v" --seed 0 --epochs 1 \
    --train-limit "$n" --set eval.steps=100 --no-progress --out "$dir" > "$dir.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "$v $k train_limit=$n rc=$rc wall_s=$(echo "$end - $start" | bc)" | tee -a "$out/summary.txt"
  tail -1 "$dir/metrics.jsonl" | tee -a "$out/summary.txt"
}
for v in fm ct; do for k in fast candle; do run "$v" 10000 "$k"; done; done
for k in fast candle; do run dt 3000 "$k"; done
