#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the project root, under shared/device/cuda-run.sh (which builds the CUDA
# llama.cpp libraries once per machine and sets LD_LIBRARY_PATH):
#     bash .device/cuda-run.sh bash .device/bench-shape.sh 2b      # then: ... bench-shape.sh 8b
# One call per model shape; each fits one 600-s device call (the first also pays the ~255-s CUDA build,
# so run 2b first and 8b right after, while the machine is warm). Everything lands in $OUT:
#   anchor-SHAPE.txt   raw llama.cpp (shared/anchors/bench.cpp) on the same model: the baseline numbers
#   bench-SHAPE.json   heie bench, HEIE's engine vs its no-speedups ablation at 1/4/16 in flight, in the same run
#   bench-SHAPE.txt    the same as a table, plus the device heie reported
# Models are random-weight GGUFs with InternVL3-2B/8B's exact shapes (gen_shapes.py), quantized to
# Q4_K_M by the anchor, written under /tmp (the 8B F16 file is 15 GB: never copied over the network).
set -euo pipefail
shape=${1:?usage: bench-shape.sh 2b|8b|tiny}
D=.device
OUT=${OUT:-/tmp/heie-gpu-out}; mkdir -p "$OUT"
M=${HEIE_MODELS:-/tmp/heie-models}; mkdir -p "$M"
LIB=${HEIE_LLAMA_LIB:-/tmp/llama-cuda/bin}
THREADS=${THREADS:-$(nproc)}
# The workload: 1024×1024 images (InternVL max_num 12 → 3×3 tiles + thumbnail = 2,560 image
# tokens) and ~300 generated tokens (3 sections × 100; the shape models' test vocabulary never writes a
# stop string, so every section runs to its cap).
MAX_TOKENS=${MAX_TOKENS:-100}
# 2048-token decode chunks: an image's 2,560 embeddings in two decodes (the anchor uses n_batch 2048).
PARALLEL=${PARALLEL:-1,4,16}
export PYTHONPATH=$D/py${PYTHONPATH:+:$PYTHONPATH}
step() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps-$shape.log"; }

step "anchor benchmark: build against $LIB"
g++ -O2 -std=c++17 $D/bench.cpp -I$D/llama.cpp/include -I$D/llama.cpp/ggml/include -I$D/llama.cpp/tools/mtmd \
    -L"$LIB" -lmtmd -lllama -lggml -lggml-base -Wl,-rpath,"$LIB" -o /tmp/anchor-bench

llm=$M/llm-$shape-q4km.gguf; mmproj=$M/mmproj-$shape.gguf
if [ ! -f "$llm" ]; then
  step "generate the $shape LLM (F16) and quantize it to Q4_K_M"
  python3 $D/gen_shapes.py llm "$shape" "$M/llm-$shape-f16.gguf"
  /tmp/anchor-bench "$M/llm-$shape-f16.gguf" --quantize "$llm" --threads "$THREADS" | tee -a "$OUT/steps-$shape.log"
  rm -f "$M/llm-$shape-f16.gguf"
fi
vit=300m; [ "$shape" = tiny ] && vit=tiny
[ -f "$mmproj" ] || { step "generate the $shape mmproj"; python3 $D/gen_shapes.py mmproj "$shape" "$mmproj" $vit; }

step "raw llama.cpp: prompt, decode at 1 and 16 streams, 1024x1024 image encode + prefill"
# A failure here must not cost the rest of a scarce device run: it is logged and the script goes on.
/tmp/anchor-bench "$llm" --mmproj "$mmproj" --ngl 99 --par 16 --img 1024 1024 --threads "$THREADS" \
    > "$OUT/anchor-$shape.txt" 2> "$OUT/anchor-$shape.log" || step "anchor benchmark failed (exit $?), see anchor-$shape.log"
cat "$OUT/anchor-$shape.txt"

# Heads with the model's shape (256 image tokens per tile = a 16×16 grid), so the heads' and the
# pre/post-processing share of end-to-end time is measured too.
width=$(python3 -c "import sys; sys.path.insert(0, '$D'); import gen_shapes; print(gen_shapes.SHAPES['$shape']['H'])")
grid=16; [ "$shape" = tiny ] && grid=2
echo "{\"llm_width\": $width, \"token_grid\": $grid}" > /tmp/heads-$shape.json
$D/heie heads init --config /tmp/heads-$shape.json --seed 1 -o /tmp/heads-$shape.safetensors

step "heie bench: heie vs no-speedups at $PARALLEL in flight"
HEIE_LOG=warn $D/heie bench --model "$llm" --mmproj "$mmproj" --heads /tmp/heads-$shape.safetensors \
    --n-gpu-layers -1 --threads "$THREADS" --batch-size "${BATCH:-2048}" --ctx-size 4096 --max-tiles 12 --width 1024 --height 1024 \
    --max-tokens "$MAX_TOKENS" --parallel "$PARALLEL" --paths "${PATHS:-heie,no-speedups}" \
    --out "$OUT/bench-$shape.json" 2>&1 | tee "$OUT/bench-$shape.txt"
step "done"
