#!/usr/bin/env bash
# Prepare .gpu/ here (once) for benchmarks/gpu.sh on the lent GPU machine, which
# reaches no package index and has Python 3.12 with torch, rich, pytest, numpy and
# matplotlib but not Hydra/OmegaConf or the peers. .gpu/ is git-ignored: the device
# call names it in `carry`.
#   bash benchmarks/gpu_pack.sh          → .gpu/whl/*.whl, .gpu/data/mnist/*.gz
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SNNRUN_DATA:-../shared/data}
mkdir -p .gpu/whl .gpu/data/mnist
# pure-Python wheels (py3 none any): the platform flags only satisfy pip's checks
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d .gpu/whl \
  hydra-core==1.3.2 omegaconf==2.3.0 snntorch==1.0.0 spikingjelly==2.0.0 nir==1.0.8 nirtorch==2.6
# Hydra's parser runtime and Norse exist only as source archives: build their
# (pure-Python) wheels here
python3 -m pip wheel --quiet --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3 norse==1.1.0
cp "$DATA"/mnist/*.gz "$DATA"/mnist/SHA256SUMS .gpu/data/mnist/
du -sh .gpu
