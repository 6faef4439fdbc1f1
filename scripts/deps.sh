#!/usr/bin/env bash
# Installs hutch's build, run and test dependencies from Debian (idempotent).
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc libuv1-dev libjansson-dev libsqlite3-dev libseccomp-dev
      libssl-dev libhttp-parser-dev libwslay-dev libcmocka-dev libnftables-dev libc-ares-dev libarchive-dev libldns-dev debootstrap iproute2 procps util-linux nftables openssl e2fsprogs xfsprogs time
      python3 python3-pytest python3-prometheus-client nodejs npm bubblewrap lxcfs chromium libnss3-tools wrk tmux curl libc6-dev libssh-dev openssh-client libcurl4-openssl-dev  # prometheus-client: /metrics parsed in tests
      clang libfuzzer-14-dev  # clang + libFuzzer: tests/fuzz (docs/fuzzing.md)
      g++ make libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep)  # the vscode layer: code-server's native modules; rg for @vscode/ripgrep
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# nodejs may come from another source (nodesource) with npm bundled
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  echo "hutch: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
