#!/usr/bin/env bash
# Builds the builtin:debian-13 image once per machine and caches it
# (default /var/cache/hutch/images/debian-13). Idempotent: a finished image
# has a .complete stamp and is reused; a half-built one is rebuilt.
set -euo pipefail
cache=${HUTCH_IMAGE_CACHE:-/var/cache/hutch/images}
name=debian-13
dest=$cache/$name
stamp_version=4   # bump when the recipe below changes
# Deno (issue 10): the runtime of sandbox.deno.*, from npm, pinned by version and integrity.
deno_version=2.9.6
deno_integrity=sha512-3md4TKLCuzsLDmfOoC5KN7NAZaxSVkMgm64vg6foD00JBADCpYS2/5QqXfzgnP5ZQz3iLP9vBQJtEgc116OAoQ==
mirror=${HUTCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ -f $dest/.complete ]] && [[ $(cat "$dest/.complete") == "$stamp_version" ]]; then
  exit 0
fi
mkdir -p "$cache"
tmp=$cache/.$name.build.$$
trap 'rm -rf --one-file-system "$tmp"' EXIT
rm -rf --one-file-system "$cache"/.$name.build.* 2>/dev/null || true
echo "hutch: building image builtin:$name (debootstrap trixie minbase; about a minute, once per machine)"
# openssh-sftp-server: the sftp subsystem (and scp) of hutch's SSH access runs it inside the sandbox.
pkgs=bash,sudo,ca-certificates,curl,git,python3,procps,iproute2,openssh-sftp-server
start=$(date +%s)
debootstrap --variant=minbase --include=$pkgs trixie "$tmp/rootfs" "$mirror" 2>&1 |
  while IFS= read -r line; do
    case $line in
      I:\ Retrieving*|I:\ Validating*) n=$((${n:-0}+1)); (( n % 20 == 0 )) && echo "  ... $line" ;;
      I:*|W:*|E:*) echo "  $line" ;;
    esac
  done
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "hutch: debootstrap failed" >&2; exit 1; }
r=$tmp/rootfs
# The app user: uid 1000, passwordless sudo, HOME=/home/app.
chroot "$r" /usr/sbin/useradd --uid 1000 --user-group --create-home --home-dir /home/app --shell /bin/bash app
echo 'app ALL=(ALL:ALL) NOPASSWD: ALL' > "$r/etc/sudoers.d/app"
chmod 0440 "$r/etc/sudoers.d/app"
# sudo must not try to resolve the hostname over the network.
echo 'Defaults !fqdn' > "$r/etc/sudoers.d/00-hutch"
chmod 0440 "$r/etc/sudoers.d/00-hutch"
echo 'hutch' > "$r/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$r/etc/hosts"
: > "$r/etc/resolv.conf"
# deno on app's PATH: npm checks the tarball against the registry's integrity;
# we check it against the pinned one too.
mkdir -p "$tmp/deno"
( cd "$tmp/deno" && npm pack --silent "@deno/linux-x64-glibc@$deno_version" >/dev/null )
got=sha512-$(openssl dgst -sha512 -binary "$tmp/deno/deno-linux-x64-glibc-$deno_version.tgz" | base64 -w0)
[[ $got == "$deno_integrity" ]] || { echo "hutch: deno tarball integrity mismatch ($got)" >&2; exit 1; }
tar -xzf "$tmp/deno/deno-linux-x64-glibc-$deno_version.tgz" -C "$tmp/deno" package/deno
install -m 0755 "$tmp/deno/package/deno" "$r/usr/local/bin/deno"
rm -rf "$tmp/deno"
# Trim caches the sandboxes never need.
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* || true
echo "$stamp_version" > "$tmp/.complete"
rm -rf --one-file-system "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "hutch: image builtin:$name ready in $(( $(date +%s) - start ))s at $dest/rootfs"
