#!/usr/bin/env bash
# Reproduce the tiny msModelSlim checkpoints from scratch on a CPU-only machine.
#   usage: bash run_all.sh [OUT_DIR]     (default: the parent folder of this script, tests/data/msmodelslim)
# Env: VENV (default /tmp/msms-env) - the venv is created if missing; it is never put inside OUT_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$(dirname "$HERE")}"
VENV="${VENV:-/tmp/msms-env}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  # torch FIRST, pinned to the CPU build (2.13.0+cpu lies on local disk here); never let pip pick another torch.
  "$VENV/bin/pip" install -q torch==2.13.0
  # msmodelslim 26.1.0 does not pin torch; keep torch==2.13.0 in the same command so pip cannot swap it.
  "$VENV/bin/pip" install -q torch==2.13.0 "transformers==4.57.*" msmodelslim==26.1.0 \
      accelerate safetensors pyyaml numpy tokenizers
fi
PY="$VENV/bin/python"; MSMS="$VENV/bin/msmodelslim"
"$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
"$VENV/bin/pip" freeze > "$HERE/pip-freeze.txt" 2>/dev/null

mkdir -p "$OUT"
rm -rf "$OUT"/src-qwen3 "$OUT"/src-qwen3moe "$OUT"/qwen3-w8a8-dynamic "$OUT"/qwen3-w4a8-dynamic \
       "$OUT"/qwen3moe-w8a8-dynamic "$OUT"/qwen3moe-w4a8-dynamic
"$PY" "$HERE/make_src.py" "$OUT"

cd "$HERE"   # the YAMLs name the calibration set as the relative path calib.jsonl
quant() {  # MODEL_TYPE SRC NAME
  echo "== msmodelslim quant $3"
  "$MSMS" quant --model_type "$1" --device cpu --model_path "$OUT/$2" --save_path "$OUT/$3" \
      --config_path "$HERE/$3.yaml" > "$HERE/logs/$3.log" 2>&1 || { tail -30 "$HERE/logs/$3.log"; exit 1; }
}
mkdir -p "$HERE/logs"
quant Qwen3-8B  src-qwen3    qwen3-w8a8-dynamic
quant Qwen3-8B  src-qwen3    qwen3-w4a8-dynamic
quant Qwen3-30B src-qwen3moe qwen3moe-w8a8-dynamic
quant Qwen3-30B src-qwen3moe qwen3moe-w4a8-dynamic

"$PY" "$HERE/inspect_out.py" "$OUT" qwen3-w8a8-dynamic qwen3-w4a8-dynamic qwen3moe-w8a8-dynamic qwen3moe-w4a8-dynamic
"$PY" "$HERE/verify_layout.py" "$OUT" > "$HERE/verify_layout.txt"
"$PY" "$HERE/check_logits.py" "$OUT" 2>/dev/null > "$HERE/check_logits.txt"
cat "$HERE/verify_layout.txt" "$HERE/check_logits.txt"
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
du -sh "$OUT"/*/
