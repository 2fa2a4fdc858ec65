#!/usr/bin/env bash
# One GPU check, <= 8 minutes on one GPU: pretraining tokens/s and MFU (vs the measured bf16
# matmul peak) for tiny ... base at seq 128 and 512, with this repository alone (synthetic data).
# Writes bench/results/gpu.json (and $OUT/gpu.json when $OUT is set). Needs torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
timeout 470 python3 bench/bench_gpu.py --device cuda --budget_s 400 "$@"
