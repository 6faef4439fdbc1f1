#!/usr/bin/env bash
# `make bench`: hutch's latency and memory numbers beside peers measured in
# the same run (bwrap, bare fork+exec). Starts its own hutchd in its own
# throwaway network namespace, like the tests. Prints a table to stdout.
# Env: BENCH_RUNS (default 30), HUTCH_BUILD, HUTCH_IMAGE_CACHE, BENCH_HUTCHD_ARGS (more hutchd
# options, e.g. "--control-slice-us 0" for a before/after pair); BENCH_ONLY=sdk,create,fair,fs,exec,volumes,apps,net,ingress,vscode,mem
# runs only those parts (default: all but fivek). BENCH_ONLY=fivek: 5,000 sandboxes alive at once
# (bench/fivek_bench.mjs; FIVEK_N, FIVEK_PAR, FIVEK_DISK_MB; about an hour here, ~6 GiB of memory), never by default.
# BENCH_ONLY=createtail: the create path's tail while CREATETAIL_N (1000) pile up (bench/create_tail.mjs), never by default.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${HUTCH_BUILD:-build}
RUN=$$
NS=hutch-bench-$RUN
IMAGE=${HUTCH_IMAGE_CACHE:-/var/cache/hutch/images}/debian-13/rootfs
export BENCH_RUNS=${BENCH_RUNS:-30}
want() { [[ -z ${BENCH_ONLY:-} || ,$BENCH_ONLY, == *,$1,* ]]; }
named() { [[ ,${BENCH_ONLY:-}, == *,$1,* ]]; } # parts too long for the default run

[[ $(id -u) == 0 ]] || { echo "bench: must run as root" >&2; exit 1; }
bin() { if [[ -x $BUILD/$1 ]]; then echo "$BUILD/$1"; else echo "$BUILD/src/$2/$1"; fi; }
HUTCHD=$(bin hutchd daemon)
INIT=$(bin hutch-init init)
[[ -x $HUTCHD ]] || { echo "bench: no hutchd in $BUILD (run 'make')" >&2; exit 1; }
[[ -d $IMAGE ]] || { echo "bench: no image at $IMAGE (run 'make image')" >&2; exit 1; }

TMP=$(mktemp -d /tmp/hutch-bench.XXXXXX)
# BENCH_ONLY=fivek: the writable layers' directory, a sparse file system of its
# own (FIVEK_N x --disk promised in full would not fit this disk; what the
# layers really write is ~0.3 MiB each). Its loop device does direct I/O, so
# nothing is cached twice: the page cache per sandbox is what it is on a real disk.
# No `discard`: without a journal ext4 would discard a layer's blocks in the
# close(2) of its image, on hutchd's loop (the second run's kill-all waited on
# it); the sparse file's blocks go with it at the end instead.
FIVEK_LOOP=
fivek_disks_up() {
  local mib=$1
  truncate -s "${mib}M" "$TMP/fivek.img" &&
  mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=1,nodiscard -m 0 "$TMP/fivek.img" &&
  FIVEK_LOOP=$(losetup --find --show --direct-io=on "$TMP/fivek.img") &&
  mkdir -p "$TMP/fivek-disks" && mount "$FIVEK_LOOP" "$TMP/fivek-disks"
}
# shellcheck disable=SC2317  # called by cleanup
fivek_disks_down() {
  mountpoint -q "$TMP/fivek-disks" 2>/dev/null && umount "$TMP/fivek-disks"
  [[ -n $FIVEK_LOOP ]] && losetup -d "$FIVEK_LOOP" 2>/dev/null
  FIVEK_LOOP=
}
HPID=
stop_hutchd() {
  [[ -n $HPID ]] || return 0
  kill -TERM "$HPID" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$HPID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$HPID" 2>/dev/null
  wait "$HPID" 2>/dev/null
  HPID=
}
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  stop_hutchd
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  find /sys/fs/cgroup -maxdepth 2 -type d \( -name "hutch-bench-$RUN" -o -name "hutch-bench-$RUN-agents" \) 2>/dev/null |
  while read -r cg; do
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  for p in $(ip netns pids "$NS-ig" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  ip netns del "$NS-ig" 2>/dev/null
  [[ -n ${DAEMON_CG:-} ]] && rmdir "$DAEMON_CG" 2>/dev/null
  fivek_disks_down
  [[ -n ${BENCH_KEEP_LOG:-} ]] && cp "$TMP/hutchd.log" "$BENCH_KEEP_LOG"
  rm -rf --one-file-system "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ! -d tests/sdk/node_modules/@deno/sandbox ]]; then
  (cd tests/sdk && npm ci --no-audit --no-fund --silent) || exit 1
fi
cc -std=c17 -O2 -Wall -Wextra -o "$TMP/spawn" bench/spawn.c || exit 1

ip netns add "$NS" || exit 1
ip -n "$NS" link set lo up
in_ns() { nsenter --net="/run/netns/$NS" -- "$@"; }

echo "bench: peers (fork+exec and bwrap, ${BENCH_RUNS} runs of bwrap, 1000 of fork+exec)..." >&2
"$TMP/spawn" 1000 /bin/true >"$TMP/bare.json"
"$TMP/spawn" "$BENCH_RUNS" "$(command -v bwrap)" --unshare-all --ro-bind "$IMAGE" / /bin/true >"$TMP/bwrap.json" ||
  echo "bench: bwrap failed (is bubblewrap installed?)" >&2

PORT=17070
# start_hutchd STATE_DIR EXTRA_ARGS...: hutchd in the bench's namespace; HPID is its pid.
start_hutchd() {
  local state=$1
  shift
  local args=(--state-dir "$state" --listen "127.0.0.1:$PORT" --socket "$TMP/hutchd.sock" --cgroup-name "hutch-bench-$RUN" "$@")
  [[ -x $INIT ]] && args+=(--init "$INIT")
  [[ -n ${HUTCH_IMAGE_CACHE:-} ]] && args+=(--image-cache "$HUTCH_IMAGE_CACHE")
  # nsenter execs hutchd (through sh when it joins DAEMON_CG first): $! is hutchd itself
  if [[ -n ${DAEMON_CG:-} ]]; then
    nsenter --net="/run/netns/$NS" -- sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$DAEMON_CG" "$HUTCHD" "${args[@]}" \
      </dev/null >>"$TMP/hutchd.log" 2>&1 &
  else
    nsenter --net="/run/netns/$NS" -- "$HUTCHD" "${args[@]}" </dev/null >>"$TMP/hutchd.log" 2>&1 &
  fi
  HPID=$!
  for _ in $(seq 300); do
    kill -0 "$HPID" 2>/dev/null || break
    grep -q 'hutchd: listening on http://' "$TMP/hutchd.log" && [[ -s $state/admin.token ]] && break
    sleep 0.1
  done
  if [[ ! -s $state/admin.token ]]; then
    echo "bench: hutchd did not start:" >&2; tail -n 30 "$TMP/hutchd.log" >&2; exit 1
  fi
}
# --app-idle 2: the apps part measures the first request to an app scaled to zero.
# --disk 1024: the RSS part holds 20 idle sandboxes, each promised its whole
# writable layer; at the default 4 GiB they need 80 GiB free on /tmp.
# BENCH_HUTCHD_ARGS: more flags for this hutchd (e.g. "--warm-memory 0" to compare pool sizes)
# shellcheck disable=SC2086
start_hutchd "$TMP/state" --storage-size 6GiB --disk 1024 --app-idle 2 ${BENCH_HUTCHD_ARGS:-}

rc=0
if want sdk; then
echo "bench: hutch through @deno/sandbox (${BENCH_RUNS} runs each)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" HUTCHD_PID="$HPID" HUTCH_CGROUP_NAME="hutch-bench-$RUN" \
  timeout 900 node bench/sdk_bench.mjs >"$TMP/hutch.json"
rc=$?
((rc == 0)) || { echo "bench: SDK benchmark failed ($rc); hutchd log tail:" >&2; tail -n 30 "$TMP/hutchd.log" >&2; }
fi

# BENCH_ONLY=create: creates per second (bench/create_bench.mjs)
if want create; then
echo "bench: creates (200 creates, 10 in flight; create -> first output with the pool drained)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" HUTCHD_PID="$HPID" \
  timeout 900 node bench/create_bench.mjs >"$TMP/create.json" || { echo "bench: create benchmark failed" >&2; rc=1; }
fi

# BENCH_ONLY=fair: a quiet sandbox's command latency with a CPU-bound sandbox beside it,
# hog running and stopped in alternating blocks (bench/fair_bench.mjs)
if want fair; then
echo "bench: CPU fairness (a quiet sandbox's round trips, a busy sandbox running and stopped in turns)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" HUTCHD_PID="$HPID" HUTCH_CGROUP_NAME="hutch-bench-$RUN" \
  timeout 900 node bench/fair_bench.mjs >"$TMP/fair.json" || { echo "bench: fairness benchmark failed" >&2; rc=1; }
  cat "$TMP/fair.json" >&2 # the whole record (wait per process, load averages) in the log
fi

if want fs; then
echo "bench: file throughput (200 MB: SDK writeFile/read, hutch cp, hutch exec cat, local cp)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" HUTCH_CLI="${HUTCH_CLI:-$(bin hutch cli)}" FS_BENCH_DIR="$TMP" \
  HUTCHD_PID="$HPID" FS_BENCH_SDK_ONLY="${FS_BENCH_SDK_ONLY:-}" timeout 600 node bench/fs_bench.mjs >"$TMP/fs.json" || { echo "bench: file benchmark failed" >&2; rc=1; }
fi

if want exec; then
echo "bench: hutch exec throughput (200 MB in, out and through cat: raw channel, JSON-RPC, local cat and pipe)..." >&2
in_ns env HUTCH_ENDPOINT="http://127.0.0.1:$PORT" HUTCH_TOKEN="$(cat "$TMP/state/admin.token")" \
  HUTCH_CLI="${HUTCH_CLI:-$(bin hutch cli)}" EXEC_BENCH_DIR="$TMP" HUTCHD_PID="$HPID" timeout 600 python3 bench/exec_bench.py \
  >"$TMP/exec.json" || { echo "bench: exec benchmark failed" >&2; rc=1; }
fi

if want volumes; then
echo "bench: volumes (boot from a snapshot vs the image, snapshot of 1 GB written, write throughput)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" \
  timeout 900 node bench/volume_bench.mjs >"$TMP/volumes.json" || { echo "bench: volume benchmark failed" >&2; rc=1; }
fi

if want apps; then
echo "bench: apps (sandbox.deploy() to first served request, warm vs scaled-to-zero request)..." >&2
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" BENCH_APP_IDLE_MS=2000 \
  timeout 900 node bench/deploy_bench.mjs >"$TMP/apps.json" || { echo "bench: apps benchmark failed" >&2; rc=1; }
fi

VSCODE_LAYER=${HUTCH_VSCODE_LAYER:-/var/cache/hutch/layers/vscode-4.99.4}
if want vscode && [[ -f $VSCODE_LAYER/.complete ]]; then
echo "bench: VS Code (the layer's bind per create; exposeVscode -> loaded workbench in Chromium)..." >&2
cc -std=c17 -O2 -Wall -Wextra -o "$TMP/bind_cost" bench/bind_cost.c || exit 1
"$TMP/bind_cost" 1000 "$VSCODE_LAYER" >"$TMP/bind.json" || { echo "bench: bind cost failed" >&2; rc=1; }
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state/admin.token")" \
  timeout 900 node bench/vscode_bench.mjs >"$TMP/vscode.json" || { echo "bench: VS Code benchmark failed" >&2; rc=1; }
elif want vscode; then
  echo "bench: no vscode layer at $VSCODE_LAYER (make vscode-layer): VS Code not measured" >&2
fi

if want net; then
echo "bench: network (proxy vs direct throughput both ways, first-byte latency, 1000 connections; own namespaces)..." >&2
cc -std=c17 -O2 -Wall -Wextra -pthread -o "$TMP/net_blast" bench/net_blast.c || exit 1
HUTCH_BUILD=$BUILD NET_BLAST="$TMP/net_blast" NET_BENCH_MB=${NET_BENCH_MB:-1000} timeout 600 python3 bench/net_bench.py \
  >"$TMP/net.json" ||
  { echo "bench: network benchmark failed" >&2; rc=1; }
fi

if want ingress; then
echo "bench: ingress (wrk: direct HTTP, direct HTTPS and through the exposed URL, interleaved)..." >&2
# its own namespace and hutchd: one hutchd per namespace (the proxy's port is fixed)
if ip netns add "$NS-ig" && ip -n "$NS-ig" link set lo up; then
  nsenter --net="/run/netns/$NS-ig" -- env HUTCH_BUILD="$BUILD" HUTCH_TEST_TMP="$TMP/ingress" \
    HUTCH_TEST_RUN="bench$RUN" timeout 600 python3 bench/ingress_bench.py >"$TMP/ingress.json" ||
    { echo "bench: ingress benchmark failed" >&2; rc=1; }
else
  echo "bench: cannot make the ingress bench's network namespace" >&2; rc=1
fi
ip netns del "$NS-ig" 2>/dev/null
fi

if want mem; then
# its own hutchd (the same namespace, after the first one stopped): MEM_SANDBOXES
# sandboxes alive at once, each promised a small writable layer, no warm pool
# (pooled sandboxes would count as the clients' memory)
MEM_SANDBOXES=${MEM_SANDBOXES:-200}
echo "bench: memory (hutchd per connected SDK client; host per idle sandbox, $MEM_SANDBOXES alive)..." >&2
stop_hutchd
# hutchd alone in a memory cgroup of its own: what it (and the kernel objects it
# makes for sandboxes: namespaces, mounts, loop devices, veths) holds is charged there
DAEMON_CG=/sys/fs/cgroup/memory/hutch-bench-$RUN-daemon
[[ -f /sys/fs/cgroup/cgroup.controllers ]] && DAEMON_CG=/sys/fs/cgroup/hutch-bench-$RUN-daemon
mkdir "$DAEMON_CG" || DAEMON_CG=
start_hutchd "$TMP/state-mem" --disk 64 --warm 0 --max-sandboxes $((MEM_SANDBOXES + 20)) --storage-size 1GiB
in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
  DENO_DEPLOY_TOKEN="$(cat "$TMP/state-mem/admin.token")" HUTCHD_PID="$HPID" HUTCH_CGROUP_NAME="hutch-bench-$RUN" \
  MEM_DAEMON_CG="${DAEMON_CG:-}" MEM_SANDBOXES="$MEM_SANDBOXES" timeout 900 node --expose-gc bench/mem_bench.mjs >"$TMP/mem.json" ||
  { echo "bench: memory benchmark failed; hutchd log tail:" >&2; tail -n 30 "$TMP/hutchd.log" >&2; rc=1; }
fi

# BENCH_ONLY=fivek (only when named): FIVEK_N sandboxes alive at once through the SDK
# (bench/fivek_bench.mjs): its own hutchd in its own memory cgroup, no warm pool,
# layers on the sparse file system above. It checks the machine first: it needs
# ~1.2 MiB of memory a sandbox plus a 4 GiB margin, and stops creating (and says
# so) when MemAvailable falls below FIVEK_MIN_AVAIL_MIB.
if named fivek; then
FIVEK_N=${FIVEK_N:-5000}
FIVEK_DISK_MB=${FIVEK_DISK_MB:-16}
avail=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
need=$((FIVEK_N * 12 / 10 + ${FIVEK_MIN_AVAIL_MIB:-4096}))
echo "bench: $FIVEK_N sandboxes alive at once (MemAvailable $avail MiB, ~$need MiB wanted; --disk $FIVEK_DISK_MB)..." >&2
((avail >= need)) || echo "bench: fivek: short of memory: it will stop below ${FIVEK_MIN_AVAIL_MIB:-4096} MiB" >&2
stop_hutchd
DAEMON_CG=${DAEMON_CG:-/sys/fs/cgroup/memory/hutch-bench-$RUN-daemon}
[[ -f /sys/fs/cgroup/cgroup.controllers ]] && DAEMON_CG=/sys/fs/cgroup/hutch-bench-$RUN-daemon
[[ -d $DAEMON_CG ]] || mkdir "$DAEMON_CG" || DAEMON_CG=
if fivek_disks_up $((FIVEK_N * FIVEK_DISK_MB + 1024)); then
  # shellcheck disable=SC2086
  start_hutchd "$TMP/state-fivek" --disk "$FIVEK_DISK_MB" --disk-dir "$TMP/fivek-disks" --disk-reserve 64 \
    --warm 0 --max-sandboxes "$FIVEK_N" --storage-size 1GiB ${FIVEK_HUTCHD_ARGS:-}
  in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
    DENO_DEPLOY_TOKEN="$(cat "$TMP/state-fivek/admin.token")" HUTCHD_PID="$HPID" HUTCH_CGROUP_NAME="hutch-bench-$RUN" \
    MEM_DAEMON_CG="${DAEMON_CG:-}" FIVEK_N="$FIVEK_N" FIVEK_STATE="$TMP/state-fivek" FIVEK_DISK_DIR="$TMP/fivek-disks" \
    timeout 7200 node --expose-gc --max-old-space-size=2048 bench/fivek_bench.mjs >"$TMP/fivek.json" ||
    { echo "bench: fivek failed; hutchd log tail:" >&2; tail -n 30 "$TMP/hutchd.log" >&2; rc=1; }
  grep -c 'hutchd: .*\(error\|failed\|cannot\)' "$TMP/hutchd.log" | xargs printf 'bench: fivek: %s hutchd log lines with an error\n' >&2
  stop_hutchd
else
  echo "bench: fivek: cannot make the layers' file system" >&2; rc=1
fi
fivek_disks_down
fi

# BENCH_ONLY=createtail (only when named): the create path's tail while CREATETAIL_N
# sandboxes pile up (bench/create_tail.mjs): its own hutchd with the create
# trace on and the scale step's flags (layers on a tmpfs of its own), the steps
# of the slowest creates and samples of where their hutch-init and hutchd's
# threads sat. CREATETAIL_N (1000), CREATETAIL_PAR (10), CREATETAIL_HUTCHD_ARGS,
# CT_SAMPLE_MS (100), CREATETAIL_OUT (a file to keep its JSON in); HUTCH_BUILD=DIR runs another build's hutchd with it.
if named createtail; then
CREATETAIL_N=${CREATETAIL_N:-1000}
stop_hutchd
mkdir -p "$TMP/ct-disks"
if mount -t tmpfs -o size=$((CREATETAIL_N * 17 + 512))m,mode=0700 hutch-ct "$TMP/ct-disks"; then
  : >"$TMP/hutchd.log"
  # shellcheck disable=SC2086
  HUTCH_CREATE_TRACE=1 start_hutchd "$TMP/state-ct" --disk 16 --disk-dir "$TMP/ct-disks" --disk-reserve 64 \
    --max-sandboxes $((CREATETAIL_N + 20)) --storage-size 1GiB ${CREATETAIL_HUTCHD_ARGS:-}
  in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$PORT" DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$PORT" \
    DENO_DEPLOY_TOKEN="$(cat "$TMP/state-ct/admin.token")" HUTCHD_PID="$HPID" HUTCH_CGROUP_NAME="hutch-bench-$RUN" \
    CT_LOG="$TMP/hutchd.log" CT_N="$CREATETAIL_N" CT_PAR="${CREATETAIL_PAR:-10}" \
    timeout 3600 node bench/create_tail.mjs >"$TMP/createtail.json" ||
    { echo "bench: createtail failed; hutchd log tail:" >&2; tail -n 30 "$TMP/hutchd.log" >&2; rc=1; }
  [[ -n ${CREATETAIL_OUT:-} ]] && cp "$TMP/createtail.json" "$CREATETAIL_OUT"
  stop_hutchd
  umount "$TMP/ct-disks" || { echo "bench: createtail: its tmpfs is still mounted" >&2; rc=1; }
else
  echo "bench: createtail: cannot mount the layers' tmpfs" >&2; rc=1
fi
fi

echo
echo "hutch bench on $(uname -r), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
python3 bench/report.py "$TMP" || rc=1
exit "$rc"
