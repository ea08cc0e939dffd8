#!/usr/bin/env bash
# On a CUDA machine after tools/device_setup.sh: greedy tokens of synthetic dense and MoE models in
# both streaming modes (through `hypura run`, the real CLI path) against the fully resident GPU run.
set -u
d=${1:-/tmp/hypura-gpu-check}
mkdir -p "$d"
py=python3
$py tools/make_synthetic.py llama3-70b "$d/dense.gguf" --layers 8 --scale 8 --vocab 2048 -q --type Q4_0
$py tools/make_synthetic.py mixtral-8x7b "$d/moe.gguf" --layers 4 --scale 8 --vocab 2048 -q --type Q4_0
$py tools/make_synthetic.py mixtral-8x7b "$d/moe16.gguf" --layers 4 --scale 8 --vocab 2048 -q --type F16
run() { $py -m hypura.main run "$1" --raw --temp 0 -n 24 -p "The quick brown fox" --json --ctx 256 "${@:2}"; }
summ() { $py -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({k: d.get(k) for k in ('mode','tokens','eval_tps','streamed_ops_on_gpu','device','experts_loaded','expert_cache_hit_rate','bytes_from_disk','streamed_layers','slots')}))"; }
for m in dense moe moe16; do
  size=$(stat -c %s "$d/$m.gguf")
  half=$((size * 3 / 4))
  echo "== $m ($size bytes)"
  run "$d/$m.gguf" --mode resident | summ
  if [ $m = dense ]; then mode=dense-stream; else mode=expert-stream; fi
  run "$d/$m.gguf" --mode $mode --gpu-budget $half | summ
done
