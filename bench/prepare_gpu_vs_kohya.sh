#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), from anywhere, before the GPU call of bench/gpu_vs_kohya.sh:
#   1. kohya sd-scripts' source into bench/out/sd-scripts (git-ignored), only what SD1.5/SDXL LoRA training
#      reads (no docs, tests, images, Windows DLLs or the SD3/FLUX tokenizer configs), with its commit in .commit;
#   2. the Python wheels the GPU machine lacks into .whl/ (git-ignored): .whl/kiln (kiln's side), .whl/kohya
#      (kohya's pinned versions, which differ from kiln's), .whl/common (both: bitsandbytes, importlib-metadata).
#
#   bash bench/prepare_gpu_vs_kohya.sh KOHYA_SOURCE
#
# KOHYA_SOURCE: a bare git directory of kohya-ss/sd-scripts (its HEAD is used) or a work tree of it.
# The GPU machine runs Python 3.12 with torch 2.11 (CUDA 13.0), transformers 5.17, accelerate 1.15,
# huggingface-hub 1.33, safetensors 0.8 and no diffusers, pydantic or bitsandbytes (the device README's
# KINDS.md); the wheels below fill exactly that gap. Everything travels within the 64 MiB the device tool
# carries: about 9 MiB of repository, 5 MiB of kohya source and 33 MiB of wheels.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="${1:?give kohya sd-scripts: a bare git dir or a work tree}"
DEST="$ROOT/bench/out/sd-scripts"
WHL="$ROOT/.whl"
SKIP='^(docs|tests|images|configs|bitsandbytes_windows)/|^\.'

rm -rf "$DEST" && mkdir -p "$DEST"
if [ -f "$SRC/train_network.py" ]; then
  (cd "$SRC" && git ls-files 2>/dev/null || find . -type f | sed 's|^\./||') | grep -v -E "$SKIP" \
    | (cd "$SRC" && xargs cp --parents -t "$DEST")
  (cd "$SRC" && git rev-parse HEAD 2>/dev/null || echo unknown) > "$DEST/.commit"
else
  # file by file: a fetched mirror may lack the large blobs (the DLLs) that `git archive` would stop on
  git --git-dir="$SRC" ls-tree -r --name-only HEAD | grep -v -E "$SKIP" | while IFS= read -r f; do
    mkdir -p "$DEST/$(dirname "$f")" && git --git-dir="$SRC" cat-file blob "HEAD:$f" > "$DEST/$f"
  done
  git --git-dir="$SRC" rev-parse HEAD > "$DEST/.commit"
fi
echo "kohya sd-scripts $(cat "$DEST/.commit") -> $DEST ($(du -sh "$DEST" | cut -f1))"

PLATFORM="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
rm -rf "$WHL" && mkdir -p "$WHL/kiln" "$WHL/kohya" "$WHL/common"
# kiln's side: what `kiln train` and the bench import that the GPU machine lacks
python3 -m pip download -q $PLATFORM -d "$WHL/kiln" diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 platformdirs==4.14.9
# kohya's side: its requirements.txt pins, where the machine's own versions differ or are missing
python3 -m pip download -q $PLATFORM -d "$WHL/kohya" diffusers==0.32.1 transformers==4.54.1 accelerate==1.6.0 \
  huggingface-hub==0.34.3 tokenizers==0.21.4 imagesize==1.4.1 toml==0.10.2 voluptuous==0.15.2
# both: AdamW8bit, and diffusers' importlib_metadata
python3 -m pip download -q $PLATFORM -d "$WHL/common" bitsandbytes==0.50.2 importlib-metadata==8.7.0 zipp==3.23.0
# bitsandbytes ships one 4-26 MB library per CUDA/ROCm/XPU version (41 MB in all); keep the CPU one and the one
# for the machine's CUDA 13.0, and the wheel's RECORD in step with its files.
python3 - "$WHL/common"/bitsandbytes-*.whl <<'EOF'
import re, sys, zipfile
path = sys.argv[1]
keep = re.compile(r"libbitsandbytes_(cpu|cuda130)\.so$")
with zipfile.ZipFile(path) as src:
    items = [(i, src.read(i)) for i in src.infolist()
             if not (i.filename.endswith(".so") and "libbitsandbytes_" in i.filename and not keep.search(i.filename))]
names = {i.filename for i, _ in items}
with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
    for info, data in items:
        if info.filename.endswith(".dist-info/RECORD"):
            lines = [ln for ln in data.decode().splitlines() if ln.split(",")[0] in names or ln.endswith("RECORD,,")]
            data = ("\n".join(lines) + "\n").encode()
        out.writestr(info, data)
import os
os.replace(path + ".tmp", path)
EOF
du -sh "$WHL"/* "$WHL"
git -C "$ROOT" check-ignore -q "$WHL" && git -C "$ROOT" check-ignore -q "$DEST" || {
  echo "warning: .whl/ or bench/out/ is not git-ignored here: do not commit them" >&2; }
echo "ready: the device call is   bash bench/gpu_vs_kohya.sh   with carry [\".whl\", \"bench/out/sd-scripts\"]"
