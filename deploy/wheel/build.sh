#!/usr/bin/env bash
# Builds the heie-server wheel (the `heie` binary for pip) into OUT_DIR, checks its platform tag with
# auditwheel, and prints the wheel's path. Used by the release workflow and by deploy/tests.
#
#   deploy/wheel/build.sh OUT_DIR [--profile dev] [--features cuda|metal] [maturin options...]
#
# The default profile is release (what users get); the test builds `--profile dev` to reuse CI's
# debug build instead of a 15-minute release build.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: build.sh OUT_DIR [maturin options]}"
shift
mkdir -p "$out"
out="$(cd "$out" && pwd)"
args=(--release)
for a in "$@"; do [ "$a" = "--profile" ] && args=(); done
# maturin reads pyproject.toml from the directory it runs in; that file points it at server/Cargo.toml.
(cd "$root/deploy/wheel" && maturin build "${args[@]}" --locked --out "$out" "$@") >&2
wheel="$(ls -t "$out"/heie_server-*.whl | head -n 1)"
# auditwheel names what the binary links beyond the manylinux policy (maturin checked it already;
# this is the independent check users of other build tools run) — Linux only.
if [ "$(uname -s)" = Linux ]; then
  auditwheel show "$wheel" >&2
fi
echo "$wheel"
