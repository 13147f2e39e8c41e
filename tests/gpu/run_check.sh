#!/usr/bin/env bash
# The prepared GPU check in one line (tests/gpu/check_gpu.py): run from the repository root on
# a machine with a CUDA build of torch; the JSON goes to $OUT (or results/gpu_check/).
cd "$(dirname "$0")/../.." && PYTHONPATH=workflow:tests "${PYTHON:-.venv/bin/python}" tests/gpu/check_gpu.py --out "${OUT:-results/gpu_check}/gpu_check.json" "$@"
