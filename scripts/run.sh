#!/usr/bin/env bash
# `make run`: starts hutchd in the foreground with its defaults (state in
# /var/lib/hutch, API on 127.0.0.1:7070). On first start hutchd writes an
# admin token and prints how to use it. Extra arguments go to hutchd.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${HUTCH_BUILD:-build}
bin=$BUILD/hutchd
[[ -x $bin ]] || bin=$BUILD/src/daemon/hutchd
if [[ ! -x $bin ]]; then
  echo "run.sh: hutchd is not built (run 'make')" >&2
  exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "run.sh: hutchd needs root (namespaces, cgroups); try: sudo make run" >&2
  exit 1
fi
echo "run.sh: starting $bin $* (Ctrl-C stops it; sandboxes with a duration are kept or cleaned on the next start)"
exec "$bin" "$@"
