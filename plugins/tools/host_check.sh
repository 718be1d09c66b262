# shellcheck shell=bash
# What the real-host checks share (comfyui/tools/check_real_comfyui.sh, a1111/tools/check_real_webui.sh):
# sourced by them, not run. They keep what differs: which files make a checkout, what goes into the venv
# and when to redo it, and the check they run.
#
# A function that finds a value assigns it to the variable whose name the caller passes (a nameref, bash
# 4.3+), not to stdout for a $(...): so its `exit 2` ends the script (in $(...) it would end only the
# subshell) and its progress lines (cargo, "== making the venv") go to the terminal, not into the value.
# Their locals are named _hc_*: a local of the caller's chosen name would take the value instead.

# host_checkout OUT USAGE KIND CHECKOUT FILE...: the host checkout as an absolute path into OUT; prints
# USAGE and exits 2 when CHECKOUT is empty, exits 2 when any FILE is missing from it (not a KIND checkout).
host_checkout() {
  local -n _hc_out="$1"
  local _hc_usage="$2" _hc_kind="$3" _hc_dir="$4" _hc_file
  shift 4
  if [ -z "$_hc_dir" ]; then
    echo "usage: $_hc_usage" >&2
    exit 2
  fi
  _hc_dir="$(cd "$_hc_dir" && pwd)"
  for _hc_file in "$@"; do
    [ -f "$_hc_dir/$_hc_file" ] || { echo "$_hc_dir is not $_hc_kind checkout: no $_hc_file" >&2; exit 2; }
  done
  _hc_out="$_hc_dir"
}

# host_heie_bin OUT REPO: $HEIE_BIN into OUT, else REPO's target/debug/heie, built with cargo when missing
# (a HEIE_BIN that is not an executable is a mistake to report, not a reason to build).
host_heie_bin() {
  local -n _hc_out="$1"
  local _hc_repo="$2"
  local _hc_bin="${HEIE_BIN:-$_hc_repo/target/debug/heie}"
  if [ ! -x "$_hc_bin" ]; then
    [ -n "${HEIE_BIN:-}" ] && { echo "HEIE_BIN=$_hc_bin is not an executable" >&2; exit 2; }
    (cd "$_hc_repo" && cargo build --locked -p heie-server --bin heie)
  fi
  _hc_out="$_hc_bin"
}

# host_venv VENV_OUT RUNS_OUT NAME: the venv NAME-venv in the cache folder ($HEIE_HOSTS_CACHE, default
# ${XDG_CACHE_HOME:-~/.cache}/heie-hosts), made with $HEIE_HOST_PYTHON (default python3) when it has no
# python yet, into VENV_OUT; the cache's runs/ folder (made) into RUNS_OUT. The venv lives outside the
# host checkout and outlives the run: installing a host's torch takes minutes, so it is done once.
host_venv() {
  local -n _hc_venv_out="$1" _hc_runs_out="$2"
  local _hc_cache="${HEIE_HOSTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heie-hosts}"
  local _hc_venv="$_hc_cache/$3-venv"
  mkdir -p "$_hc_cache/runs"
  if [ ! -x "$_hc_venv/bin/python" ]; then
    echo "== making the venv $_hc_venv"
    "${HEIE_HOST_PYTHON:-python3}" -m venv "$_hc_venv"
  fi
  _hc_venv_out="$_hc_venv"
  _hc_runs_out="$_hc_cache/runs"
}

# host_stale STAMP WANTED: true when the venv's STAMP file does not say WANTED (its install is to be done
# again); host_stamp STAMP WANTED after that install has gone through.
host_stale() {
  [ "$(cat "$1" 2>/dev/null)" != "$2" ]
}

host_stamp() {
  echo "$2" > "$1"
}

# host_run_check RUNS NAME WORK_PREFIX WORK_WHAT COMMAND...: COMMAND with TMPDIR=RUNS (so its work folder,
# WORK_PREFIX-*, stays in the cache beside the logs), its output shown and kept in RUNS/NAME-DATE.log; then
# says where the log and the newest work folder (holding WORK_WHAT) are. Returns COMMAND's status.
host_run_check() {
  local _hc_runs="$1" _hc_name="$2" _hc_prefix="$3" _hc_what="$4"
  shift 4
  local _hc_log _hc_work _hc_status=0
  _hc_log="$_hc_runs/$_hc_name-$(date +%Y%m%d-%H%M%S).log"
  TMPDIR="$_hc_runs" "$@" 2>&1 | tee "$_hc_log" || _hc_status=$?
  _hc_work="$(ls -1dt "$_hc_runs/$_hc_prefix"-* 2>/dev/null | head -n 1)"
  echo "== the check's output: $_hc_log"
  if [ -n "$_hc_work" ]; then
    echo "== its work folder ($_hc_what): $_hc_work"
  fi
  return "$_hc_status"
}
