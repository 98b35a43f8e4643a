#!/usr/bin/env bash
# The GPU checks of gr2-sim, on one CUDA GPU in under 8 minutes (each step has a time limit; 480 s in all):
#   1. the tests that need CUDA (tests/test_cuda.py, `pytest -m cuda`)
#   2. `gr2-sim bench train --device cuda` at every preset (TF32 and bf16-autocast rows)
#   3. a short phase 3 on Reach: collect 30 demos, train --stage action 300 steps on the GPU, eval 20 episodes
# Everything it prints is also written under $OUT (default runs/gpu_check): nvidia-smi.txt, pytest_cuda.txt,
# bench_train_cuda.{md,json}, collect.txt, train.txt, eval.txt, the run folder p3/ and eval/eval.json.
#
#   bash scripts/gpu_check.sh            # from the repository root
#   OUT=/tmp/gpu bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
GR2=(python -m gr2_sim.cli)
START=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - START )) s in)"; }

step "machine"
{ date -u; nvidia-smi || true; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; } \
  2>&1 | tee "$OUT/nvidia-smi.txt"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"

status=0
step "1. CUDA tests"
timeout 150 python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.txt" \
  || status=1

step "2. bench train --device cuda, every preset"
timeout 100 "${GR2[@]}" bench train --device cuda --presets tiny small base --steps 30 --batch-size 32 \
  --json "$OUT/bench_train_cuda.json" 2>&1 | tee "$OUT/bench_train_cuda.md" || status=1

step "3. phase 3 on Reach: 30 demos, 300 steps on the GPU, 20 test episodes"
timeout 60 "${GR2[@]}" collect --env GR2Sim/Reach-v0 --episodes 30 --noise 0.05 --workers "$(( $(nproc) < 8 ? $(nproc) : 8 ))" \
  --out "$OUT/reach30.hdf5" --overwrite 2>&1 | tee "$OUT/collect.txt" || status=1
rm -rf "$OUT/p3"
timeout 110 "${GR2[@]}" train --stage action --data "$OUT/reach30.hdf5" --out "$OUT/p3" --steps 300 --device cuda \
  --eval-every 100 --ckpt-every 300 --no-progress 2>&1 | tee "$OUT/train.txt" || status=1
timeout 60 "${GR2[@]}" eval --ckpt "$OUT/p3" --env GR2Sim/Reach-v0 --episodes 20 --device cuda --out "$OUT/eval" \
  --no-progress 2>&1 | tee "$OUT/eval.txt" || status=1
python - "$OUT" <<'EOF' 2>&1 | tee -a "$OUT/train.txt" || status=1
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/p3/metrics.jsonl")]
speed = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
print(f"phase 3 on the GPU: {len(speed)} log windows, median {sorted(speed)[len(speed) // 2]:.0f} samples/s, "
      f"last loss {[r['loss'] for r in rows if 'loss' in r][-1]:.4f}, wall {rows[-1]['wall_s']:.0f} s")
EOF

step "done in $(( $(date +%s) - START )) s, status $status (0: every check passed); outputs in $OUT"
exit $status
