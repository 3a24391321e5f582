#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, in ONE device call (docs/BENCH.md):
#   command: bash bench/gpu_vs_kohya.sh      carry: [".whl", "bench/out/sd-scripts"]      timeout_s: 600
# after `bash bench/prepare_gpu_vs_kohya.sh KOHYA_SOURCE` here. It installs the carried wheels into two
# folders (kiln's and kohya's versions differ), then runs bench/bench_vs_kohya.py over the rows below in
# priority order, skipping (and listing) rows that would end past DEADLINE seconds, and writes under $OUT:
#   vs_kohya.json (the table), vs_kohya.log (what it printed), logs.tgz (every run's log and probe record),
#   env.txt (GPU, driver, packages).
# ROWS / DEADLINE / STEPS / WARMUP / IMAGES can be set in the command to change the plan, e.g.
#   ROWS=sd15-b4-gc0-AdamW,sd15-b4-gc0-AdamW.compile DEADLINE=300 bash bench/gpu_vs_kohya.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench/out/gpu}"
mkdir -p "$OUT"
SITE=/tmp/kiln-bench-site
WORK=/tmp/kiln-bench-work
started=$(date +%s)

for side in kiln kohya; do
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/$side" \
    .whl/$side/*.whl .whl/common/*.whl || { echo "installing the $side wheels failed" | tee "$OUT/vs_kohya.log"; exit 1; }
done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, torch.version.cuda)"
  for side in kiln kohya; do
    PYTHONPATH="$SITE/$side" python3 -c "
import importlib.metadata as md, sys
names = ('diffusers', 'transformers', 'accelerate', 'huggingface-hub', 'tokenizers', 'pydantic', 'bitsandbytes')
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return 'missing'
print(sys.argv[1], 'side:', ', '.join(f'{n} {version(n)}' for n in names))" "$side"
  done
  echo "kohya commit: $(cat bench/out/sd-scripts/.commit 2>/dev/null || echo unknown)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Priority order: the targets' rows first (SD1.5 and SDXL, batch 1 and 4), then checkpointing the other way,
# AdamW8bit, then kiln's opt-in levers against the same kohya rows, then the rest of the matrix.
DEFAULT_ROWS="sd15-b1-gc0-AdamW,sd15-b4-gc0-AdamW,sdxl-b1-gc1-AdamW,sdxl-b4-gc1-AdamW,\
sd15-b1-gc1-AdamW,sdxl-b1-gc0-AdamW,sd15-b1-gc0-AdamW8bit,sdxl-b1-gc1-AdamW8bit,\
sd15-b4-gc0-AdamW.fused_adamw,sd15-b4-gc0-AdamW.channels_last,sd15-b4-gc0-AdamW.sdpa_flash,\
sdxl-b1-gc1-AdamW.fused_adamw,sdxl-b1-gc1-AdamW.channels_last,sd15-b4-gc0-AdamW.pinned_latents,\
sdxl-b1-gc1-AdamW.vae_batch_8,sd15-b4-gc0-AdamW.compile,\
sd15-b4-gc1-AdamW,sdxl-b4-gc0-AdamW,sd15-b4-gc0-AdamW8bit,sdxl-b4-gc1-AdamW8bit,\
sd15-b1-gc1-AdamW8bit,sd15-b4-gc1-AdamW8bit,sdxl-b1-gc0-AdamW8bit,sdxl-b4-gc0-AdamW8bit"
spent=$(( $(date +%s) - started ))
export PYTHONPATH="$SITE/kiln" PYTHONUNBUFFERED=1
python3 bench/bench_vs_kohya.py --kohya bench/out/sd-scripts --kohya-python python3 \
  --kohya-pythonpath "$SITE/kohya" --work "$WORK" --json "$OUT/vs_kohya.json" --rows "${ROWS:-$DEFAULT_ROWS}" \
  --steps "${STEPS:-30}" --warmup "${WARMUP:-3}" --images "${IMAGES:-100}" --timeout 300 \
  --deadline "$(( ${DEADLINE:-500} - spent ))" 2>&1 | tee "$OUT/vs_kohya.log"
code=${PIPESTATUS[0]}
tar -czf "$OUT/logs.tgz" -C "$WORK" logs 2>/dev/null
echo "bench exit $code; $(( $(date +%s) - started )) s in all; results in $OUT"
exit "$code"
