#!/usr/bin/env bash
# Build the vendored llama.cpp as shared libraries plus llama-bench, llama-simple, llama-quantize and llama-gguf-split, inside the work tree.
# Backend: BACKEND=cuda|metal|cpu, else auto (CUDA when nvcc and an NVIDIA GPU exist, Metal on macOS, CPU otherwise).
# CUDA_ARCHS=90 overrides the CUDA architectures; PORTABLE=1 turns GGML_NATIVE off (building for another machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/vendor/llama.cpp"
out="$root/build/llama.cpp"
jobs=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu)}

backend=${BACKEND:-auto}
if [ "$backend" = auto ]; then
  if [ "$(uname -s)" = Darwin ]; then backend=metal
  elif command -v nvcc >/dev/null 2>&1 && { [ -e /dev/nvidia0 ] || nvidia-smi -L >/dev/null 2>&1; }; then backend=cuda
  else backend=cpu; fi
fi
flags=(-DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
       -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
       -DGGML_CCACHE=OFF -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON "-DCMAKE_INSTALL_RPATH=\$ORIGIN")
[ "${PORTABLE:-0}" = 1 ] && flags+=(-DGGML_NATIVE=OFF) || flags+=(-DGGML_NATIVE=ON)
# A native build compiles ggml's AMX kernels whenever the CPU reports AMX. On the 2-core dev/CI VMs
# (AMX reported, arch_prctl permission granted) every AMX matmul dies at its first `ldtilecfg`
# (general protection fault; llama.cpp's own llama-simple included), so native builds leave AMX out
# unless GGML_AMX=1 is set. The AVX-512/AVX2 kernels and CPU_REPACK are unaffected.
if [ "${PORTABLE:-0}" != 1 ] && [ "${GGML_AMX:-0}" != 1 ] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  flags+=("-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx")
fi
case "$backend" in
  cuda)
    archs=${CUDA_ARCHS:-}
    if [ -z "$archs" ] && command -v nvidia-smi >/dev/null 2>&1; then
      archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.[:space:]')
    fi
    flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${archs:-native}") ;;
  metal) flags+=(-DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON) ;;
  cpu) flags+=(-DGGML_METAL=OFF) ;;
  *) echo "build: unknown BACKEND=$backend (cuda|metal|cpu|auto)" >&2; exit 2 ;;
esac
gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)

# Reconfigure only when the configuration changed; the build itself is incremental.
config="${backend} ${flags[*]}"
if [ ! -f "$out/.hypura-config" ] || [ "$(cat "$out/.hypura-config")" != "$config" ]; then
  rm -rf "$out"
  cmake -S "$src" -B "$out" "${gen[@]}" "${flags[@]}" >/dev/null
  echo "$config" > "$out/.hypura-config"
fi
cmake --build "$out" -j "$jobs" --target llama ggml llama-bench llama-simple llama-quantize llama-gguf-split
echo "$backend" > "$out/.hypura-backend"
