#!/usr/bin/env bash
# Two stage lists at once, one per GPU of an nvidia-h200-x2 machine (half the wall time of
# running them in turn):  bash benchmarks/gpu_session_x2.sh "stages for GPU 0" "stages for GPU 1"
# Each half writes its own $OUT/gpuN/session.tgz; the per-step limits of each half must add
# up to less than the call's limit (600 s), as in gpu_session.sh.
set -u
ROOT=${OUT:-/tmp/titaninfer-out}
for i in 0 1; do
  stages=$1; shift
  mkdir -p "$ROOT/gpu$i"
  # shellcheck disable=SC2086  # the stage list splits into words on purpose
  CUDA_VISIBLE_DEVICES=$i OUT=$ROOT/gpu$i bash benchmarks/gpu_session.sh $stages > "$ROOT/gpu$i/console.log" 2>&1 &
done
wait
for i in 0 1; do echo "==== GPU $i"; sed -n '/==== status ====/,$p' "$ROOT/gpu$i/console.log"; done
