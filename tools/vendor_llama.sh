#!/usr/bin/env bash
# Populate vendor/llama.cpp from the pinned llama-cpp-python sdist (llama.cpp 0c1e57098), checksum-verified.
# Nothing of llama.cpp is committed: vendor/llama.cpp and the download cache are git-ignored.
set -euo pipefail
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PY=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/sdist"
dest="$root/vendor/llama.cpp"
sdist="$cache/llama_cpp_python-$VERSION.tar.gz"
stamp="$dest/.hypura-vendored"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$SHA256" ]; then
  exit 0
fi
mkdir -p "$cache"
if [ ! -f "$sdist" ] || ! echo "$SHA256  $sdist" | sha256sum -c --status; then
  rm -f "$sdist"
  echo "vendor: downloading llama-cpp-python==$VERSION sdist from PyPI" >&2
  "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "llama-cpp-python==$VERSION" -d "$cache" 2>/dev/null \
  || "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$cache"
fi
if ! echo "$SHA256  $sdist" | sha256sum -c --status; then
  echo "vendor: checksum mismatch for $sdist (expected $SHA256)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$sdist" -C "$tmp" "llama_cpp_python-$VERSION/vendor/llama.cpp"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$dest"
echo "$SHA256" > "$stamp"
echo "vendor: llama.cpp extracted to $dest" >&2
