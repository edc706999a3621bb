#!/usr/bin/env bash
# One prepared check on one GPU, under 8 minutes (docs/GPU.md#benchgpu_checksh): the facet
# equality in bf16, the precompute's tokens/s and MFU (Qwen2.5-0.5B), ViT-B/16 training
# images/s and MFU (batch 256, bf16), and a 1-process torchrun that all_reduces over NCCL.
#
#   bash bench/gpu_check.sh [--smoke] [--peak-tflops 989] [--tolerance 0.015]
#
# Each figure is a line `name = value unit`. --smoke: tiny sizes, on the CPU without a GPU
# (gloo there). PYTHON names the interpreter (default .venv/bin/python). Exit status: 0 when
# every check passed, else that of the first part that failed (124: it ran out of time).
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}

status=0
timeout 420 "$python" bench/gpu_check.py "$@" || status=$?
timeout 60 "$python" -m torch.distributed.run --standalone --nproc_per_node 1 \
  bench/gpu_check.py --all-reduce || { s=$?; [ "$status" -ne 0 ] || status=$s; }
exit "$status"
