"""Build the cffi extension `hypura_llama._native` against the vendored llama.cpp (API mode).

The cdef is the curated headers in decl/ joined in a fixed order; the C side includes the real
vendored headers plus the shim in csrc/. Output: src/hypura_llama/_native.*.so, linked with an
rpath to the llama.cpp build in this work tree (build/llama.cpp/bin).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DECLS = ("ggml.h", "gguf.h", "llama.h", "shim.h")


def make_ffi(lib_dir: Path) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef("\n".join((HERE / "decl" / name).read_text() for name in DECLS))
    vendor = ROOT / "vendor" / "llama.cpp"
    shim = (HERE / "csrc" / "hypura_shim.c").read_text()
    ffi.set_source(
        "hypura_llama._native",
        '#include "llama.h"\n#include "ggml.h"\n#include "ggml-backend.h"\n#include "ggml-cpu.h"\n#include "gguf.h"\n'
        + shim,
        include_dirs=[str(vendor / "include"), str(vendor / "ggml" / "include")],
        library_dirs=[str(lib_dir)],
        libraries=["llama", "ggml", "ggml-base", "ggml-cpu"],
        extra_link_args=[f"-Wl,-rpath,{lib_dir}"] if sys.platform != "win32" else [],
        extra_compile_args=["-O2"],
    )
    return ffi


def main() -> int:
    lib_dir = Path(os.environ.get("HYPURA_LLAMA_LIB_DIR", ROOT / "build" / "llama.cpp" / "bin")).resolve()
    if not (lib_dir / ("libllama.dylib" if sys.platform == "darwin" else "libllama.so")).exists():
        print(f"build_native: llama.cpp is not built in {lib_dir}: run `make native`", file=sys.stderr)
        return 1
    ffi = make_ffi(lib_dir)
    tmp = ROOT / "build" / "cffi"
    tmp.mkdir(parents=True, exist_ok=True)
    out = ffi.compile(tmpdir=str(tmp), verbose=False)
    target_dir = HERE / "src" / "hypura_llama"
    for old in target_dir.glob("_native.*"):
        old.unlink()
    dest = target_dir / Path(out).name
    Path(out).replace(dest)
    print(f"build_native: {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
