#!/usr/bin/env bash
# Wheels that travel to the accelerator machine (its image has jax 0.11 with CUDA, flax and optax at
# its own versions, and no package index): flax and optax at this project's pins, pure Python.
# Usage: bash scripts/gpu_wheels.sh   (writes .whl/, ignored by git; then carry=[".whl"])
set -euo pipefail
mkdir -p .whl
for spec in flax==0.12.8 optax==0.2.8; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "$spec"
done
ls -l .whl
