#!/usr/bin/env bash
# The extension in a real AUTOMATIC1111 WebUI or Forge, in one command (run it before a release; README
# "Before a release"):
#
#   plugins/a1111/tools/check_real_webui.sh /path/to/stable-diffusion-webui   # or HEIE_WEBUI=/path/to/it
#
# Your own checkout of A1111 (>= 1.9) or Forge; nothing of it is copied into this repository. The script
# makes a venv in the cache folder and runs the WebUI's own installer there (`launch.py --exit`: torch,
# its requirements, the repositories it clones), then tests/check_in_webui.py, which starts
# `heie serve --http` on the fixture model, installs the exported extension into extensions/heie as
# "Install from URL" does, starts the WebUI (no SD model), runs jobs through the WebUI's own code, runs the
# WebUI's requirement install and does it all again. extensions/heie, extensions/heie-check and config.json
# are put back as they were.
#
# Environment:
#   HEIE_WEBUI         the WebUI checkout, when not given as the argument
#   HEIE_BIN           the heie binary (default: target/debug/heie here, built with cargo when missing)
#   HEIE_HOSTS_CACHE   cache folder (default ${XDG_CACHE_HOME:-~/.cache}/heie-hosts): the venvs, runs/
#   HEIE_HOST_PYTHON   the Python that makes the venv (default python3; the WebUIs want 3.10, A1111 1.10 runs on 3.11)
#   TORCH_COMMAND      the WebUI's own variable: how its installer installs torch (e.g. from a CPU-only wheel
#                      index; its default pulls the CUDA build, gigabytes)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
extension="$(dirname "$here")"
repo="$(cd "$extension/../.." && pwd)"
# shellcheck source=../../tools/host_check.sh
. "$repo/plugins/tools/host_check.sh"

host_checkout webui "$0 /path/to/stable-diffusion-webui   (or HEIE_WEBUI=/path/to/it $0); A1111 or Forge" \
  "an A1111/Forge" "${1:-${HEIE_WEBUI:-}}" launch.py requirements_versions.txt
# Forge runs on the CPU only when told so; A1111 takes --use-cpu all (check_in_webui.py passes it).
if [ -d "$webui/modules_forge" ]; then
  flavour=forge
  launch_args=(--launch-arg=--always-cpu)
else
  flavour=a1111
  launch_args=()
fi

host_heie_bin heie_bin "$repo"
host_venv venv runs "$flavour"
py="$venv/bin/python"

# The WebUI's installer, again only when its requirements or its commit changed.
wanted="$(sha256sum < "$webui/requirements_versions.txt" | cut -c1-16)-$(git -C "$webui" rev-parse HEAD 2>/dev/null || echo unknown)"
stamp="$venv/.heie-prepared"
if host_stale "$stamp" "$wanted"; then
  echo "== the WebUI's installer into $venv (the first time: torch, its requirements and repositories, minutes)"
  (cd "$webui" && "$py" launch.py --skip-torch-cuda-test --skip-python-version-check --exit)
  host_stamp "$stamp" "$wanted"
fi

echo "== checking ($flavour $(git -C "$webui" rev-parse --short HEAD 2>/dev/null || echo '?'), heie $heie_bin)"
host_run_check "$runs" "$flavour" heie-webui-check "heie-serve.log, webui-1.log, webui-2.log, the images and grids each job saved" \
  python3 "$extension/tests/check_in_webui.py" --webui "$webui" --python "$py" --heie-bin "$heie_bin" \
  ${launch_args[@]+"${launch_args[@]}"}
