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
# --net-host-ns: hutchd manages sandbox networking (its own nftables table,
# `inet hutch`, and a veth per sandbox) in this network namespace. Without
# it sandboxes get loopback only. The tests never use it: they run hutchd in
# network namespaces of their own.
# --live-restore 3600: a crash, kill -9 or Ctrl-C of hutchd leaves running
# sandboxes running for up to an hour; the next start adopts them
# (docs/restore.md). Pass --live-restore 0 to stop them with hutchd.
echo "run.sh: starting $bin --net-host-ns --live-restore 3600 $* (Ctrl-C stops hutchd; running sandboxes wait up to an hour for the next start to adopt them)"
# Exposed ports (sandbox.exposeHttp, hutch expose) are https URLs signed by
# this install's ingress CA, made at the first exposure (docs/expose.md).
state=/var/lib/hutch
for ((i = 1; i <= $#; i++)); do [[ ${!i} == --state-dir ]] && { j=$((i + 1)); state=${!j}; }; done
echo "run.sh: exposed URLs are signed by the ingress CA $state/ingress-ca/ca.crt; trust it with"
echo "          curl --cacert $state/ingress-ca/ca.crt URL"
echo "          NODE_EXTRA_CA_CERTS=$state/ingress-ca/ca.crt node app.mjs"
exec "$bin" --net-host-ns --live-restore 3600 "$@"
