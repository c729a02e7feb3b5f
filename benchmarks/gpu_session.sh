#!/usr/bin/env bash
# One device call = one stage list. Each step has its own timeout so a failure is logged and
# the rest still runs; a one-line status per step is printed last.
#   bash benchmarks/gpu_session.sh env e2e kernels latency offline-qwen ...
# Logs and packs go under $OUT and come back as one tarball, session.tgz (the device tool
# brings back at most 8 files). The per-step timeouts of one call must add up to less than
# the call's own limit (600 s), or the tarball is never written: check before each call.
# The first call on a fresh machine compiles every Triton kernel (~10-30 s per model).
# The device's copy of the tree has a stale .git: prefix the command with the literal sha,
#   TITANINFER_GIT_SHA=<git rev-parse HEAD, run here> bash benchmarks/gpu_session.sh ...
# so the packs' manifests name the commit measured.
set -u
FINAL=${OUT:-/tmp/titaninfer-out}; OUT=$FINAL/w; mkdir -p "$OUT"  # all of it comes back as one tarball
export PYTHONPATH=$PWD TITANINFER_CACHE_DIR=$OUT/cache PYTHONUNBUFFERED=1
RESULTS=$OUT/results; mkdir -p "$RESULTS"
STATUS=()
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 t=$2; shift 2
  local t0=$SECONDS
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  STATUS+=("$(printf '%-28s rc=%-4s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
  tail -n 25 "$OUT/$name.log"
}
B="python -m titaninfer.bench"
# Decode-latency A/B of tuning constants (benchmarks/with_overrides.py), one model per stage.
K=titaninfer.kernels
# A name starting "off" runs with TITANINFER_PDL=0.
VARIANTS=("base|" "slotrule|$K.decode_attention._ONE_WAVE_MAX_TILES=0")
variant_step() {  # variant_step PREFIX TIMEOUT "NAME|OVERRIDES" MODULE ARGS...: step PREFIX-NAME
  local prefix=$1 t=$2 name=${3%%|*} ovr=${3#*|} pdl=1
  shift 3
  [ "${name#off}" != "$name" ] && pdl=0
  # shellcheck disable=SC2086  # the override list splits into words on purpose
  step "$prefix-$name" "$t" env TITANINFER_PDL=$pdl python benchmarks/with_overrides.py $ovr -- "$@"
}
replay() {  # replay MODEL TIMEOUT_S: device time of the batch-1 decode graph, per variant
  local v
  for v in "${VARIANTS[@]}"; do
    variant_step "replay-$1" "$2" "$v" benchmarks.graph_replay_time --model "dummy:$1"
  done
}
replay2() {  # replay2 TIMEOUT_S MODEL...: every variant twice per model, interleaved
  local t=$1 m v rep; shift
  for m in "$@"; do for rep in 1 2; do for v in "${VARIANTS[@]}"; do
    variant_step "replay$rep-$m" "$t" "$v" benchmarks.graph_replay_time --model "dummy:$m"
  done; done; done
}
ABLATIONS=("" "--drop attn" "--twice attn" "--drop norm" "--drop attn --drop norm" "--drop mlp"
           "--drop attnblock" "--drop lmhead" "")
ablation() {  # ablation MODEL TIMEOUT_S [FLAGS...]: the captured step with parts left out (step_ablation.py)
  local m=$1 t=$2 a i=0
  shift 2
  [ $# -eq 0 ] && set -- "${ABLATIONS[@]}"
  for a in "$@"; do
    # shellcheck disable=SC2086  # the flags split into words on purpose
    i=$((i + 1))
    step "ablation-$m-$i$(echo "${a:-base}" | tr -d ' -')" "$t" python -m benchmarks.step_ablation $a --model "dummy:$m"
  done
}
variants() {  # variants MODEL TIMEOUT_S: every variant twice, interleaved (drift shows as a rep gap)
  local v rep
  for rep in 1 2; do for v in "${VARIANTS[@]}"; do
    variant_step "var-$1-$rep" "$2" "$v" titaninfer.bench latency --engines titaninfer --no-progress \
      --model "dummy:$1" --out "$OUT/packs/var-${v%%|*}-$rep" --results-dir "$RESULTS/var-${v%%|*}-$rep"
  done; done
}
latency3_variants() {  # every variant once, decode-latency on the three models
  local v
  for v in "${VARIANTS[@]}"; do
    variant_step "lat3" 90 "$v" titaninfer.bench latency --engines titaninfer --no-progress \
      --model dummy:tinyllama-1.1b,dummy:qwen3-0.6b,dummy:llama3-8b \
      --out "$OUT/packs/lat3-${v%%|*}" --results-dir "$RESULTS/lat3-${v%%|*}"
  done
}
for stage in "$@"; do case $stage in
  env) step env 60 bash -c 'nvidia-smi; python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())"' ;;
  ceilings) step ceilings 60 $B ceilings ;;
  e2e) step pytest-e2e-gpu 280 python -m pytest -q -s -m gpu tests/e2e/test_gpu.py ;;
  kernels) step pytest-kernels-gpu 90 python -m pytest -q -m gpu tests/kernels ;;
  kernels-all) step pytest-kernels-all-gpu 280 python -m pytest -q tests/kernels ;;
  e2e-long) step pytest-e2e-gpu 300 python -m pytest -q -s -m gpu tests/e2e/test_gpu.py ;;
  skinny-tests) step pytest-skinny-gpu 150 python -m pytest -q tests/kernels/test_skinny_gemm.py ;;
  skinny-sweep) step skinny-sweep 200 python benchmarks/skinny_sweep.py --budget-s 140 --json "$OUT/skinny-sweep.json" ;;
  latency-ab) step latency-skinny 75 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:llama3-8b --out "$OUT/packs/latency-skinny" --results-dir "$RESULTS/skinny" ;
             step latency-cublas 75 env TITANINFER_SKINNY_MAX_ROWS=0 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:llama3-8b --out "$OUT/packs/latency-cublas" --results-dir "$RESULTS/cublas" ;;
  latency-pdl) step latency-pdl-on 100 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:llama3-8b --out "$OUT/packs/latency-pdl-on" --results-dir "$RESULTS/pdl-on" ;
             step latency-pdl-off 100 env TITANINFER_PDL=0 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:llama3-8b --out "$OUT/packs/latency-pdl-off" --results-dir "$RESULTS/pdl-off" ;;
  replay-tiny) replay tinyllama-1.1b 30 ;;
  ablation-tiny) ablation tinyllama-1.1b 45 ;;
  replay2-qwen) replay2 30 qwen3-0.6b ;;
  replay2-tiny-8b) replay2 35 tinyllama-1.1b llama3-8b ;;
  ablation-8b) ablation llama3-8b 45 ;;
  stub-tiny) ablation tinyllama-1.1b 40 "" "--stub attn" "--drop attn" ;;
  replay2-all) replay2 30 tinyllama-1.1b qwen3-0.6b llama3-8b ;;  # 30 s: a first compile can pass 22
  replay2-tiny) replay2 30 tinyllama-1.1b ;;
  replay2-tiny-qwen) replay2 30 tinyllama-1.1b qwen3-0.6b ;;
  replay2-8b) replay2 40 llama3-8b ;;
  replay-batches) for m in qwen3-0.6b llama3-8b; do for b in 4 8; do for v in "${VARIANTS[@]}"; do
             variant_step "replay-$m-b$b" 30 "$v" benchmarks.graph_replay_time --model "dummy:$m" --batch $b
             done; done; done ;;
  skinny-rows) for m in qwen3-0.6b llama3-8b; do for b in 2 4 8; do for r in 1 8; do
             step "replay-$m-b$b-rows$r" 35 env TITANINFER_SKINNY_MAX_ROWS=$r python -m benchmarks.graph_replay_time \
               --model "dummy:$m" --batch $b; done; done; done ;;
  acc3-tests) step pytest-skinny-acc3-gpu 100 python -m pytest -q tests/kernels/test_skinny_gemm.py -k "acc3 or gpu" ;;
  acc3-sweep) step skinny-sweep-acc3 130 python benchmarks/skinny_sweep.py --acc3 --ms 2,4,8 --no-fused --budget-s 100 \
               --shapes qwen.qkv,qwen.o,qwen.gate_up,qwen.down,8b.gate_up --json "$OUT/skinny-sweep-acc3.json" ;;
  # The batch-2 decode step on cuBLAS against the GEMV's 3-D accumulator form (the default).
  acc3-b2) for m in qwen3-0.6b llama3-8b; do
             step "replay-$m-b2-cublas" 40 env TITANINFER_SKINNY_MAX_ROWS=1 python -m benchmarks.graph_replay_time --model "dummy:$m" --batch 2
             step "replay-$m-b2-acc3" 40 python -m benchmarks.graph_replay_time --model "dummy:$m" --batch 2; done ;;
  split-sweep) step split-sweep 120 python -m benchmarks.decode_split_sweep ;;
  lat3) step lat3 150 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:qwen3-0.6b,dummy:llama3-8b --out "$OUT/packs/lat3" --results-dir "$RESULTS" ;;
  replay3) for m in tinyllama-1.1b qwen3-0.6b llama3-8b; do
             step "replay-$m" 30 python -m benchmarks.graph_replay_time --model "dummy:$m"; done ;;
  replay-8b) replay llama3-8b 35 ;;
  replay-qwen) replay qwen3-0.6b 30 ;;
  variants-tiny) variants tinyllama-1.1b 45 ;;
  latency3-variants) latency3_variants ;;
  prefill-host) step prefill-host-tiny 90 python benchmarks/prefill_host_time.py --model dummy:tinyllama-1.1b ;
             step prefill-host-8b 120 python benchmarks/prefill_host_time.py --model dummy:llama3-8b ;;
  rope-tests) step pytest-rope-gpu 100 python -m pytest -q tests/kernels/test_skinny_gemm.py tests/kernels/test_rotary.py \
             tests/kernels/test_decode_attention.py -k "rope or rotary or decode" ;;
  e2e-new) step pytest-e2e-new-gpu 150 python -m pytest -q -s tests/e2e/test_gpu.py -k "prefill_graph or rope" ;;
  e2e-residual) step pytest-e2e-residual-gpu 150 python -m pytest -q -s tests/e2e/test_gpu.py -k residual_add ;;
  variants-8b) variants llama3-8b 60 ;;
  timeline) step timeline-tiny 100 python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b --json "$OUT/timeline-tiny.json" ;
             step timeline-8b 120 python -m benchmarks.step_timeline --model dummy:llama3-8b --json "$OUT/timeline-8b.json" ;;
  probe) step persistent-probe 180 python -m benchmarks.persistent_probe --json "$OUT/persistent-probe.json" ;;
  attn-tests) step pytest-decode-attn-gpu 100 python -m pytest -q tests/kernels/test_decode_attention.py ;;
  rmsnorm-tests) step pytest-rmsnorm-gpu 40 python -m pytest -q tests/kernels/test_rmsnorm.py ;;
  rotary-tests) step pytest-rotary-gpu 60 python -m pytest -q tests/kernels/test_rotary.py ;;
  e2e-tier) step pytest-e2e-tier-gpu 120 python -m pytest -q -s -m gpu tests/e2e/test_gpu.py -k context_tier ;;
  e2e-qwen) step pytest-e2e-qwen-gpu 90 python -m pytest -q -s -m gpu tests/e2e/test_gpu.py -k "qwen3 or no_kernel_compiles" ;;
  latency-qwen) step latency-qwen 60 $B latency --engines titaninfer --no-progress \
             --model dummy:qwen3-0.6b --out "$OUT/packs/latency-qwen" --results-dir "$RESULTS" ;;
  # FlashInfer as a decode-attention peer: needs the wheels of ../shared/tools/device-wheels.sh
  # in .whl, carried with the call (carry: [".whl"]).
  kernel-bench-fi) step kernel-bench-fi 180 bash -c 'python3 -m pip install -q --no-index --no-deps --no-compile \
             --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:$PYTHONPATH \
             python -m titaninfer.bench.kernels --only decode --out "$0"' "$OUT/kernel-bench-fi" ;;
  kernel-bench) step kernel-bench 240 python -m titaninfer.bench.kernels ;;
  smoke) step smoke-latency-tiny 150 $B latency --engines titaninfer --no-progress --model dummy:tinyllama-1.1b --out "$OUT/packs/smoke" ;;
  latency) step latency-all 560 $B latency --engines titaninfer,hf --no-progress \
             --model dummy:tinyllama-1.1b,dummy:qwen3-0.6b,dummy:llama3-8b --out "$OUT/packs/latency" --results-dir "$RESULTS" ;;
  offline-qwen) step offline-qwen3 380 $B offline --engines titaninfer,hf --no-progress \
             --model dummy:qwen3-0.6b --out "$OUT/packs/offline-qwen3" --results-dir "$RESULTS" ;;
  latency-ti) step latency-ti 110 $B latency --engines titaninfer --no-progress \
             --model dummy:qwen3-0.6b,dummy:llama3-8b --out "$OUT/packs/latency-ti" --results-dir "$RESULTS" ;;
  latency-tiny) step latency-tiny 150 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b --out "$OUT/packs/latency-tiny" --results-dir "$RESULTS" ;;
  latency-ti3) step latency-ti3 200 $B latency --engines titaninfer --no-progress \
             --model dummy:tinyllama-1.1b,dummy:qwen3-0.6b,dummy:llama3-8b --out "$OUT/packs/latency-ti3" --results-dir "$RESULTS" ;;
  offline-qwen-ti) step offline-qwen3-ti 200 $B offline --engines titaninfer --no-progress \
             --model dummy:qwen3-0.6b --out "$OUT/packs/offline-qwen3-ti" --results-dir "$RESULTS" ;;
  offline-tiny) step offline-tiny 200 $B offline --engines titaninfer,hf --no-progress --num-requests 64 \
             --model dummy:tinyllama-1.1b --out "$OUT/packs/offline-tiny" --results-dir "$RESULTS" ;;
  offline-8b) step offline-8b 280 $B offline --engines titaninfer,hf --no-progress --num-requests 64 \
             --model dummy:llama3-8b --out "$OUT/packs/offline-8b" --results-dir "$RESULTS" ;;
  profile-tiny) step profile-tiny 120 python -m titaninfer profile --model dummy:tinyllama-1.1b -n 1 \
             --input-len 128 --output-len 64 --steps 20 --out "$OUT/profile-tiny" ;;
  # Each kernel's share of the step's critical path under PDL (benchmarks/critical_path.py).
  trace-tiny) step trace-tiny 120 python -m titaninfer profile --pdl --model dummy:tinyllama-1.1b -n 1 \
             --input-len 128 --output-len 64 --steps 20 --out "$OUT/trace-tiny" ;
             step critical-path-tiny 30 python benchmarks/critical_path.py "$OUT/trace-tiny/trace.json" ;;
  trace-8b) step trace-8b 150 python -m titaninfer profile --pdl --model dummy:llama3-8b -n 1 \
             --input-len 128 --output-len 64 --steps 20 --out "$OUT/trace-8b" ;
             step critical-path-8b 30 python benchmarks/critical_path.py "$OUT/trace-8b/trace.json" ;;
  # Per-program timestamps inside the captured step (benchmarks/kernel_trace.py).
  ktrace-tiny) step ktrace-tiny 120 python -m benchmarks.kernel_trace --model dummy:tinyllama-1.1b \
             --json "$OUT/ktrace-tiny.json" ;;
  ktrace-8b) step ktrace-8b 150 python -m benchmarks.kernel_trace --model dummy:llama3-8b --json "$OUT/ktrace-8b.json" ;;
  ktrace-variants) for v in "${VARIANTS[@]}"; do for m in tinyllama-1.1b llama3-8b; do
             variant_step "ktrace-$m" 60 "$v" benchmarks.kernel_trace --model "dummy:$m"; done; done ;;
  argmax-tests) step pytest-argmax-gpu 200 python -m pytest -q tests/kernels/test_argmax.py tests/e2e/test_gpu.py \
             -k "argmax or replay_equals_eager" ;;
  # The step outside the graph with and without the graphs' own argmax (one process each).
  timeline-ab) for v in "base|" "noargmax|titaninfer.runner.cuda_graph.GREEDY_IN_GRAPH_MAX_BATCH=0"; do
             variant_step timeline-tiny 100 "$v" benchmarks.step_timeline \
               --model dummy:tinyllama-1.1b; done ;;
  # The step outside the graph with the engine settings of step_timeline and of the bench.
  timeline-settings) step timeline-tiny-8-05 60 python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b
             step timeline-tiny-256-05 60 python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b --max-num-seqs 256
             step timeline-tiny-8-09 60 python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b --gpu-memory-utilization 0.9
             step timeline-tiny-256-09 60 python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b --max-num-seqs 256 --gpu-memory-utilization 0.9 ;;
  ktrace-test) step pytest-ktrace-gpu 90 python -m pytest -q -m gpu tests/kernels/test_skinny_gemm.py -k kernel_trace ;;
  # Where Qwen3-0.6B's small-batch decode step goes (batch 1 and 4 as shipped, batch 2 on the GEMV).
  profile-qwen-small) for n in 1 4; do step "profile-qwen-b$n" 110 python -m titaninfer profile --model dummy:qwen3-0.6b \
               -n $n --input-len 128 --output-len 64 --steps 20 --top 25 --out "$OUT/profile-qwen-b$n"; done
             step profile-qwen-b2-rows2 110 env TITANINFER_SKINNY_MAX_ROWS=2 python -m titaninfer profile \
               --model dummy:qwen3-0.6b -n 2 --input-len 128 --output-len 64 --steps 20 --top 25 --out "$OUT/profile-qwen-b2" ;;
  profile-8b) step profile-8b 150 python -m titaninfer profile --model dummy:llama3-8b -n 1 \
             --input-len 128 --output-len 64 --steps 20 --out "$OUT/profile-8b" ;;
  profile-qwen) step profile-qwen-b256 150 python -m titaninfer profile --model dummy:qwen3-0.6b -n 256 \
             --input-len 512 --output-len 64 --steps 30 --warmup-steps 40 --out "$OUT/profile-qwen" ;;
  steps-qwen) step steps-qwen 200 python benchmarks/step_times.py --model dummy:qwen3-0.6b -n 256 --steps 60 --sync ;;
  steps-qwen-async) step steps-qwen-async 120 python benchmarks/step_times.py --model dummy:qwen3-0.6b -n 256 --steps 60 ;;
  profile-qwen-prefill) step profile-qwen-prefill 150 python -m titaninfer profile --model dummy:qwen3-0.6b -n 256 \
             --input-len 1024 --output-len 64 --warmup-steps 1 --steps 3 --out "$OUT/profile-qwen-prefill" ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac; done
printf '%s\n' "${STATUS[@]}" > "$OUT/status.txt"
find "$OUT" -name trace.json -size +12M -delete  # Chrome traces of big steps: too large to bring back
tar czf "$FINAL/session.tgz" -C "$OUT" . && rm -rf "$OUT"
echo; echo "==== status ===="; printf '%s\n' "${STATUS[@]}"
