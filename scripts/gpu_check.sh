#!/usr/bin/env bash
# Every GPU measurement of the CUDA path in one run of under 5 minutes, on a machine with a CUDA device:
# pair and stream at 640x480 and 1280x720, 1024 and 2048 keypoints, fp32 and fp16, cameras 1/2/4/8, the public
# reference side by side on the same GPU, the open models, peak memory and dispatch counts (all printed by bench).
#
#   SUPERGLUE_REFERENCE=/path/to/SuperGluePretrainedNetwork scripts/gpu_check.sh
#
# Environment: OUT (output folder, else ./gpu_check_out), SUPERGLUE_REFERENCE (a checkout of
# magicleap/SuperGluePretrainedNetwork; the side-by-side part is skipped without it), PYTHON (default: the
# repository's .venv, else python3), PAIRS (timed pairs per run, default 20), BUDGET (seconds, default 280),
# DRY_RUN=1 (print the command lines and exit, without a GPU).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-./gpu_check_out}
PAIRS=${PAIRS:-20}
BUDGET=${BUDGET:-280}
REFERENCE=${SUPERGLUE_REFERENCE:-}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

emit() {  # NAME ARGUMENTS: one line of the command list, its JSON beside the printed output
    printf '%s\t%s --json %q\n' "$1" "$2" "$OUT_DIR/$1.json"
}

commands() {
    local common="--device cuda --pairs $PAIRS --warmup 3"
    local size keypoints precision mode backend
    # the fixed backend (CUDA graphs) first: it carries the real-time targets
    for size in "640 480" "1280 720"; do
        for keypoints in 1024 2048; do
            for precision in fp32 fp16; do
                emit "fixed_${size/ /x}_${keypoints}_${precision}" \
                    "bench $common --backend fixed --mode stream --resize $size --max-keypoints $keypoints --precision $precision"
            done
        done
    done
    for size in "640 480" "1280 720"; do
        for keypoints in 1024 2048; do
            for precision in fp32 fp16; do
                for mode in stream pair; do
                    emit "bench_${size/ /x}_${keypoints}_${precision}_${mode}" \
                        "bench $common --resize $size --max-keypoints $keypoints --precision $precision --mode $mode"
                done
            done
        done
    done
    for backend in fixed torch; do
        for precision in fp32 fp16; do
            emit "cameras_${backend}_640x480_1024_${precision}" \
                "bench $common --backend $backend --resize 640 480 --max-keypoints 1024 --precision $precision --cameras 1 2 4 8"
        done
    done
    # the open models: SIFT runs on the CPU; XFeat runs on the GPU, on either backend
    emit "sift_open_640x480_stream" \
        "bench $common --weights sift_open --resize 640 480 --max-keypoints 1024 --mode stream"
    for backend in fixed torch; do
        emit "xfeat_open_${backend}_640x480_stream" \
            "bench $common --weights xfeat_open --backend $backend --resize 640 480 --max-keypoints 1024 --mode stream"
    done
    if [[ -n "$REFERENCE" ]]; then
        for size in "640 480" "1280 720"; do
            for keypoints in 1024 2048; do
                emit "reference_${size/ /x}_${keypoints}" \
                    "bench $common --reference $(printf %q "$REFERENCE") --resize $size --max-keypoints $keypoints"
            done
        done
    fi
}

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    REFERENCE=${REFERENCE:-REFERENCE_CHECKOUT}
    commands
    exit 0
fi

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_check: no CUDA device here (nvidia-smi finds none); run it on a machine with an NVIDIA GPU" >&2
    exit 1
fi
if ! timeout 60 "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: $PYTHON's torch cannot use the GPU (a CPU-only build?); set PYTHON to one built with CUDA" >&2
    exit 1
fi
if [[ -n "$REFERENCE" && ! -f "$REFERENCE/models/superglue.py" ]]; then
    echo "gpu_check: SUPERGLUE_REFERENCE=$REFERENCE is not a SuperGluePretrainedNetwork checkout" >&2
    exit 1
fi

mkdir -p "$OUT_DIR"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
    "$PYTHON" -c "import torch; print(f'torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$OUT_DIR/environment.txt"
[[ -n "$REFERENCE" ]] || echo "gpu_check: SUPERGLUE_REFERENCE is not set: skipping the side-by-side runs with the reference"

commands > "$OUT_DIR/commands.txt"
"$PYTHON" -m superglue_ros.cli.run_list "$OUT_DIR/commands.txt" "$OUT_DIR" "$BUDGET"
