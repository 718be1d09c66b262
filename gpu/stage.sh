#!/usr/bin/env bash
# Run HERE (the CPU machine), from anywhere in the repository: builds `heie` with llama.cpp linked
# dynamically and stages into .device/ (git-ignored) everything gpu/bench-shape.sh needs on the GPU
# machine, through the team's shared/device/stage.sh: the vendored llama.cpp source, the binary,
# cuda-run.sh, this folder's device script, the anchor benchmark (bench.cpp), the model-shape generator
# (gen_shapes.py) and the pure-Python `gguf` and `yaml` packages it imports.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
shared=${HEIE_SHARED:-$root/../shared}
[ -f "$shared/device/stage.sh" ] || { echo "no $shared/device/stage.sh (set HEIE_SHARED)"; exit 1; }
cargo build --release --features dynamic-link -p heie-server
py=$(mktemp -d)/py; mkdir -p "$py"
python3 - "$py" <<'PY'
import importlib, os, shutil, sys
for name in ("gguf", "yaml"):
    src = os.path.dirname(importlib.import_module(name).__file__)
    shutil.copytree(src, os.path.join(sys.argv[1], name), ignore=shutil.ignore_patterns("*.so", "__pycache__"))
PY
bash "$shared/device/stage.sh" gpu/bench-shape.sh "$shared/anchors/bench.cpp" "$shared/anchors/gen_shapes.py" "$py"
echo "staged; on the device: bash .device/cuda-run.sh bash .device/bench-shape.sh 2b   (then 8b)"
