#!/usr/bin/env bash
# The node pack in a real ComfyUI, in one command (run it before a release; README "Before a release"):
#
#   plugins/comfyui/tools/check_real_comfyui.sh /path/to/ComfyUI        # or HEIE_COMFYUI=/path/to/ComfyUI
#
# Your own ComfyUI checkout (git clone of ComfyUI, any commit); nothing of it is copied into this repository.
# The script makes a venv in the cache folder, installs ComfyUI's requirements.txt and this repository's
# plugins/python there, and runs tests/real_comfyui_check.py with it, which links this pack into
# custom_nodes/heie, starts `heie serve` on the fixture model and ComfyUI (--cpu), and checks them through
# ComfyUI's HTTP API and websocket. The link is removed again unless it was there before.
#
# Environment:
#   HEIE_COMFYUI          the ComfyUI checkout, when not given as the argument
#   HEIE_BIN              the heie binary (default: target/debug/heie here, built with cargo when missing)
#   HEIE_HOSTS_CACHE      cache folder (default ${XDG_CACHE_HOME:-~/.cache}/heie-hosts): the venv, runs/
#   HEIE_HOST_PYTHON      the Python that makes the venv (default python3; ComfyUI wants 3.10 or newer)
#   HEIE_TORCH_INDEX_URL  a pip index to install torch, torchvision and torchaudio from first (a CPU-only
#                         wheel index saves the CUDA packages PyPI's Linux torch pulls in: gigabytes)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pack="$(dirname "$here")"
repo="$(cd "$pack/../.." && pwd)"

# shellcheck source=../../tools/host_check.sh
. "$repo/plugins/tools/host_check.sh"

host_checkout comfy "$0 /path/to/ComfyUI   (or HEIE_COMFYUI=/path/to/ComfyUI $0)" "a ComfyUI" "${1:-${HEIE_COMFYUI:-}}" \
  main.py requirements.txt

# custom_nodes/heie must be this pack (the check makes the link); another install there would be tested instead.
link="$comfy/custom_nodes/heie"
made_link=0
if [ -e "$link" ] || [ -L "$link" ]; then
  if [ "$(readlink -f "$link")" != "$(readlink -f "$pack")" ]; then
    echo "$link exists and is not a link to $pack: move it away first" >&2
    exit 2
  fi
else
  made_link=1
fi
# pip builds a local package inside its folder (build/): it builds heie-client from a copy instead.
client="$(mktemp -d)"
cleanup() {
  if [ "$made_link" = 1 ]; then rm -f "$link"; fi
  rm -rf "$client"
}
trap cleanup EXIT
cp -r "$repo/plugins/python/." "$client/"

host_heie_bin heie_bin "$repo"
host_venv venv runs comfyui
py="$venv/bin/python"

# ComfyUI's requirements (torch first when an index is given), again only when they or the client's changed.
wanted="$(cat "$comfy/requirements.txt" "$repo/plugins/python/pyproject.toml" | sha256sum | cut -c1-16)-${HEIE_TORCH_INDEX_URL:-pypi}"
stamp="$venv/.heie-requirements"
if host_stale "$stamp" "$wanted"; then
  echo "== installing ComfyUI's requirements into $venv (the first time: torch and its packages, minutes)"
  "$py" -m pip install --quiet --upgrade pip
  if [ -n "${HEIE_TORCH_INDEX_URL:-}" ]; then
    "$py" -m pip install --quiet torch torchvision torchaudio --index-url "$HEIE_TORCH_INDEX_URL"
  fi
  "$py" -m pip install --quiet -r "$comfy/requirements.txt" "$client[grpc]"
  host_stamp "$stamp" "$wanted"
fi
# This checkout's client, whatever the stamp says: it is the code under test.
"$py" -m pip install --quiet --no-deps --force-reinstall "$client"

echo "== checking (ComfyUI $(git -C "$comfy" rev-parse --short HEAD 2>/dev/null || echo '?'), heie $heie_bin)"
host_run_check "$runs" comfyui heie-comfy-check "serve.log, comfyui.log, output/ with the images the workflows saved" \
  env HEIE_BIN="$heie_bin" "$py" "$pack/tests/real_comfyui_check.py" --comfyui "$comfy" --python "$py"
