#!/usr/bin/env bash
# On the lent GPU machine (no network): install carried wheels, unpack the carried llama.cpp
# source, build it for CUDA and build the binding. Source it: `. tools/device_setup.sh`.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$(ls -d "$PWD"/packages/*/src | tr '\n' ':')
if [ ! -f build/llama.cpp/.hypura-built ]; then
  mkdir -p vendor && tar -C vendor -xJf .devcarry/llama-src.tar.xz
  export PATH=/usr/local/cuda/bin:$PATH
  BACKEND=cuda CUDA_ARCHS=${CUDA_ARCHS:-90} bash tools/build_llama.sh > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
  touch build/llama.cpp/.hypura-built
fi
python3 packages/llama-binding/build_native.py
# The device's numpy (from a torch virtualenv) loads an older libstdc++ than the one llama.cpp was
# built against; importing numpy before the binding then crashes CUDA model loads. Preload the
# system's libstdc++ (seen on the lent H100 only; regular virtualenvs are unaffected).
export LD_PRELOAD=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}')
set +e
