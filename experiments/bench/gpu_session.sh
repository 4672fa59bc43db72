#!/usr/bin/env bash
# Everything one GPU lease checks: the fused-kernel tests at full size, the kernel benchmark at the issue's
# GPU sizes, and the Triton tuning sweeps (tiles, Newton vs sequential, solve vs kernel, what bounds the
# sequential forward). Run from the repository root; logs and results go to $OUT. Give each part its own
# device call (10 minutes at most). On an H100 (session 14) the tests took 9 minutes (522 s), the ParaGRU
# benchmark with the peers about 4 (252 s), the ParaLSTM one about 4; bench-gru and bench-lstm fit in one call.
# The tuning sweeps took about 5 (session 11). `remaining` measures only what session 14's lease left open:
# the wide accelerated-scan peer (a linear scan over 1.5 D channels, as many bytes as a ParaGRU) next to our
# ParaGRU and the plain peer in the same run, a rerun of the ParaLSTM Newton rows (their T=512 outlier), the whole
# ParaGRU/ParaLSTM layers against cuDNN's in one run (the `layer` cases, session 30), and the Newton kernels' tiles
# at B=4 (triton_compile_check.py: the ParaLSTM backward's tile spills under Triton 3.9).
# `lm` times the language models' training step (lm_throughput.py) at width 1024 × 24 layers, not run yet.
#   OUT=/tmp/gpu bash experiments/bench/gpu_session.sh STEP   (STEP: one of STEPS below; -h, --help: the usage)
# The device has no network: the peers travel as wheels in .whl (ignored by git), made here with
#   pip download --no-deps --only-binary :all: -d .whl accelerated-scan fla-core einops
# and named in the device call's `carry` (".whl").
# A benchmark step that the time limit stopped has left its partial results file in $OUT: put the files that came back
# in a folder of the working tree, name it in `carry`, and run the step again with RESUME_FROM=that/folder: the
# benchmark keeps their rows and times only the cases they lack (kernel_bench.py --resume).
set -uo pipefail
STEPS=(tests tests-triton tests-other bench-gru bench-lstm remaining lm tune all)
USAGE="usage: OUT=/tmp/gpu bash experiments/bench/gpu_session.sh STEP, STEP one of: ${STEPS[*]}"
WHAT=${1:-}
if [[ $WHAT == -h || $WHAT == --help ]]; then
    echo "$USAGE"
    exit 0
fi
known=0
for step in "${STEPS[@]}"; do [[ $WHAT == "$step" ]] && known=1; done
if ((!known)); then  # before nvidia-smi or anything else: a typo must not spend a lease
    if [[ -n $WHAT ]]; then echo "gpu_session.sh: unknown step '$WHAT'" >&2; else echo "gpu_session.sh: no step given" >&2; fi
    echo "$USAGE" >&2
    exit 2
fi
OUT=${OUT:-/tmp/pararnn_gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # peer kernels (accelerated-scan, fla-core) carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PWD:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
status=0
resume_args() {  # $1: a results file's name; with RESUME_FROM holding it, copied to $OUT and --resume printed
    if [[ -n ${RESUME_FROM:-} && -f $RESUME_FROM/$1 ]]; then cp "$RESUME_FROM/$1" "$OUT/$1" && echo --resume; fi
}
# `tests-triton` and `tests-other` split `tests` in two calls where 9 minutes is too close to the 10-minute limit
TEST_FILES=(tests/test_ops_triton.py tests/test_ops_cuda.py tests/test_ops_gpu.py tests/test_core_dispatch.py)
case $WHAT in
    tests | all) TESTS=("${TEST_FILES[@]}") ;;
    tests-triton) TESTS=("${TEST_FILES[0]}") ;;
    tests-other) TESTS=("${TEST_FILES[@]:1}") ;;
    *) TESTS=() ;;
esac
if ((${#TESTS[@]})); then
    python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" 2>&1 | tee "$OUT/$WHAT.log" | tail -40
    status=${PIPESTATUS[0]}
fi
for cell in gru lstm; do
    if [[ $WHAT == bench-$cell || $WHAT == all ]]; then
        python3 experiments/bench/kernel_bench.py --device cuda --cells $cell --batch 16 --hidden 1024 \
            --T 512 2048 8192 65536 --max-sequential-T 8192 --reference-T 512 --out "$OUT/kernels_cuda_$cell.json" \
            $(resume_args "kernels_cuda_$cell.json") 2>"$OUT/bench_$cell.err" | tee "$OUT/bench_$cell.log"
        status=$((status || PIPESTATUS[0]))
    fi
done
if [[ $WHAT == remaining ]]; then
    python3 experiments/bench/kernel_bench.py --device cuda --cells gru lstm --modes fused --batch 16 --hidden 1024 \
        --T 512 2048 8192 65536 --reference-T 65536 --out "$OUT/kernels_cuda_remaining.json" \
        $(resume_args kernels_cuda_remaining.json) \
        --cases 'gru/fused-triton' 'gru/fused-triton-fast' 'peer/accelerated-scan-triton*' 'lstm/fused-triton-newton' \
        'gru/layer' 'lstm/layer' 'gru/nn.GRU' 'lstm/nn.LSTM' \
        2>"$OUT/bench_remaining.err" | tee "$OUT/bench_remaining.log"
    status=$((status || PIPESTATUS[0]))
    python3 experiments/bench/triton_tuning.py --out "$OUT/newton_tiles" --sections newton-tiles > "$OUT/newton_tiles.log" 2>&1
    status=$((status || $?))
fi
if [[ $WHAT == lm ]]; then  # the LM's GPU step times (README: not measured yet), the paper's 400M-scale width
    python3 experiments/bench/lm_throughput.py --device cuda --dim 1024 --layers 24 --tokens-per-step 65536 \
        --out "$OUT/lm_throughput_cuda.json" > "$OUT/lm.log" 2>&1
    status=$((status || $?))
fi
if [[ $WHAT == tune || $WHAT == all ]]; then
    python3 experiments/bench/triton_tuning.py --out "$OUT" > "$OUT/tune.log" 2>&1
    status=$((status || $?))
    python3 experiments/bench/triton_sequential_bound.py --out "$OUT/triton_sequential_bound_cuda.json" \
        > "$OUT/bound.log" 2>&1
    status=$((status || $?))
fi
exit $status
