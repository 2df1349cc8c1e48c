#!/usr/bin/env bash
# The GPU check: the CUDA tests and every GPU table of the benchmark tool, each written to a file
# in OUT_DIR, in about 5 minutes on an H100 / H200 (each stage has a time limit; a stage that
# overruns leaves its file with what it printed and the check goes on).
#
#   tools/gpu_check.sh OUT_DIR [REFERENCE_DIR]
#
# REFERENCE_DIR: the DETR-with-iRPE folder of a checkout of the reference code (microsoft/Cream,
# folder iRPE/DETR-with-iRPE), outside this repository; its rows then join the encoder, training
# step and inference tables, and its optional rpe_ops CUDA extension is built first, in the
# background while the tests run (rpe_ops_build.txt says whether it was). It needs easydict.
#
# Python packages missing on the machine can be carried as wheels in .whl/ (installed with
# --no-index into a temporary folder). PYTHON picks the interpreter (default python3).
# DRY_RUN=1 runs every stage on the CPU at tiny sizes, to check this script where there is no GPU.
#
# Files: environment.txt, tests.txt, encoder.md, train_step.md, train_multiscale.md, profile.md,
# infer.md, rpe_ops_build.txt (with a reference).
set -u
out=${1:?usage: tools/gpu_check.sh OUT_DIR [REFERENCE_DIR]}
ref=${2:-}
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -n "$ref" ] && ref=$(cd "$ref" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        .whl/*.whl && export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi

device=cuda
scale=1  # of the time limits
size=()
train_size=()
infer_size=()
if [ "${DRY_RUN:-0}" = 1 ]; then
    device=cpu
    scale=20
    size=(--repeats 1 --layers 1 --height 6 --width 8 --no-memory)
    train_size=(--backbone resnet18 --height 96 --width 128 --repeats 1 --profile-steps 1 --top 10)
    infer_size=(--backbone resnet18 --height 96 --width 128 --repeats 1)
fi
refopt=()
[ -n "$ref" ] && refopt=(--reference "$ref")
bench=("$py" tools/benchmark.py)
# stage SECONDS FILE COMMAND...: run with a time limit, the output appended to FILE
stage() {
    local limit=$1 file=$2 t0=$SECONDS
    shift 2
    echo "== $* (limit ${limit}s)" >>"$out/$file"
    timeout --kill-after=10 $((limit * scale)) "$@" >>"$out/$file" 2>&1
    echo "== exit status $? after $((SECONDS - t0))s" >>"$out/$file"
}

{
    date -u
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20
    nvidia-smi 2>&1 | head -15
    "$py" -c "import sys, torch, torchvision; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__); print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
    "$py" -c "import triton; print('triton', triton.__version__)" 2>&1
} >"$out/environment.txt" 2>&1

build=
if [ -n "$ref" ]; then
    (cd "$ref/rpe_ops" && MAX_JOBS=8 timeout 200 "$py" setup.py build_ext --inplace) >"$out/rpe_ops_build.txt" 2>&1 &
    build=$!
fi

# the CUDA tests: the flex kernel's, the CUDA cases of the exact attention tests, test_cuda.py
parallel=()
"$py" -c "import xdist" 2>/dev/null && parallel=(-n 6)
stage 110 tests.txt "$py" -m pytest -q -rs "${parallel[@]}" -k cuda tests/test_attention_flex.py \
    tests/test_attention_exact.py tests/test_cuda.py

if [ -n "$build" ]; then
    wait "$build" && echo "rpe_ops built" >>"$out/rpe_ops_build.txt" || echo "rpe_ops not built: the reference runs its PyTorch fallback" >>"$out/rpe_ops_build.txt"
    export PYTHONPATH=$ref/rpe_ops${PYTHONPATH:+:$PYTHONPATH}
fi

stage 45 encoder.md "${bench[@]}" encoder --device "$device" --kernels auto fused sdpa flex "${size[@]}" "${refopt[@]}"
stage 45 train_step.md "${bench[@]}" train-step --device "$device" --precisions fp32 tf32 bf16 "${train_size[@]}" \
    "${refopt[@]}"
if [ "${DRY_RUN:-0}" = 1 ]; then  # the recipe's sizes take many minutes a step on a CPU
    echo "== left out in a dry run" >"$out/train_multiscale.md"
else
    stage 45 train_multiscale.md "${bench[@]}" train-step --device "$device" --multiscale --precisions fp32 bf16 \
        --no-memory --repeats 2 "${refopt[@]}"
fi
for precision in fp32 bf16; do
    stage 25 profile.md "${bench[@]}" train-step --device "$device" --profile --profile-precision $precision \
        "${train_size[@]}"
done
[ -n "$ref" ] && stage 25 profile.md "${bench[@]}" train-step --device "$device" --profile "${train_size[@]}" \
    "${refopt[@]}"
stage 30 infer.md "${bench[@]}" infer --device "$device" --batches 1 4 "${infer_size[@]}" "${refopt[@]}"
echo "done in ${SECONDS}s" >>"$out/environment.txt"
