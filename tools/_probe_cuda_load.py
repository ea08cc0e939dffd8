"""Bisect an init_from_user crash on CUDA (device debugging aid, run in subprocesses)."""
import sys
import hypura_llama as h
from hypura_placement.synthetic import TINY, write_synthetic
from hypura_streaming import DirectReader, OwnedLoad
variant = sys.argv[1]
if "devfirst" in variant:
    print(h.gpu_devices(), flush=True)
if "log" in variant:
    import logging; logging.basicConfig(level=logging.DEBUG, stream=open("/tmp/probe.log", "w"))
path = write_synthetic(f"/tmp/probe-{variant}.gguf", "llama3-70b", qtype="F16", **{**TINY["llama3-70b"], "layers": 4})
streamed = (lambda n: ".ffn_" in n and n.startswith("blk.1.")) if "stream" in variant else (lambda n: False)
ov = ((r"^blk\.1\.ffn_(gate|up|down)\.weight$", h.BufferType.cpu()),) if "ov" in variant else ()
ngl = 0 if "cpu" in variant else -1
r = DirectReader(path)
load = OwnedLoad(path, r, streamed)
m = load.load(h.ModelParams(n_gpu_layers=ngl, load_mode="none", use_extra_bufts=False, overrides=ov))
print(variant, "loaded", len(load.streamed), flush=True)
m.close()
if "dense" in variant:
    from hypura_streaming import DenseStreamer
    gpu = h.gpu_devices()[0]
    for q in ("F16", "Q4_0"):
        p2 = write_synthetic(f"/tmp/probe-d-{q}.gguf", "llama3-70b", qtype=q, **{**TINY["llama3-70b"], "layers": 4})
        print("params", flush=True)
        st = DenseStreamer(p2, [1, 2, 3], 2, device=gpu)
        print("load", flush=True)
        m2 = st.load_model()
        print("loaded dense", q, st.stats()["streamed_ops_on_gpu"], flush=True)
        m2.close(); st.close()
