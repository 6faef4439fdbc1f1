// A terminal into a sandbox: xterm.js in the page, over the same WebSocket JSON-RPC as `hutch shell`
// (docs/protocol.md "pseudo-terminals"): spawn with "pty", stdin as a client stream, stdout as a
// server stream, ptyResize on resize, processWait for the end. The token rides in a subprotocol
// ("hutch.bearer.<token>" beside "hutch.v1"), never in the URL.
import { Terminal } from "./xterm.mjs";

const STDIN = 1; // our client stream id (per connection)

function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function openTerminal(container, sandboxId, token, { onExit } = {}) {
  const term = new Terminal({ rows: 24, cols: 100, cursorBlink: true, convertEol: false, scrollback: 2000,
                              fontFamily: "ui-monospace, monospace", fontSize: 13 });
  term.open(container);
  const url = new URL(`/api/v3/sandbox/${encodeURIComponent(sandboxId)}/connect`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, ["hutch.v1", `hutch.bearer.${token}`]);
  const enc = new TextEncoder();
  let nextId = 1, pid = null, outStream = null, closed = false;
  const early = []; // stdout chunks that arrive before the spawn's answer names the stream
  const pending = new Map();
  let ping = null;

  const send = (obj) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(obj));
  const call = (method, params) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    send({ jsonrpc: "2.0", id, method, params });
  });
  const notify = (method, params) => send({ jsonrpc: "2.0", method, params });
  const ok = (res) => {
    if (res && "ok" in res) return res.ok;
    throw new Error(res?.error?.message ?? "request failed");
  };

  ws.onopen = async () => {
    ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send("ping"), 2000);
    try {
      notify("$sandbox.stream.start", { streamId: STDIN });
      const r = ok(await call("spawn", { command: "bash", args: ["-l"], env: { TERM: "xterm-256color" },
                                         stdinStreamId: STDIN, stdout: "piped", stderr: "null",
                                         pty: { rows: term.rows, cols: term.cols } }));
      pid = r.pid;
      outStream = r.stdoutStreamId;
      for (const [sid, bytes] of early.splice(0)) if (sid === outStream) term.write(bytes);
      term.focus();
      const st = ok(await call("processWait", { pid }));
      term.write(`\r\n[exited${st.signal ? ` on ${st.signal}` : ` with status ${st.code}`}]\r\n`);
      onExit?.(st);
    } catch (e) {
      term.write(`\r\n[${e.message}]\r\n`);
    }
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string" || ev.data === "pong") return;
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (m.id !== undefined && pending.has(m.id)) {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error.message ?? "error"));
      else p.resolve(m.result);
      return;
    }
    if (m.method === "$sandbox.stream.enqueue" && typeof m.params?.data === "string") {
      const bytes = b64decode(m.params.data);
      if (outStream === null) early.push([m.params.streamId, bytes]);
      else if (m.params.streamId === outStream) term.write(bytes);
    }
  };
  ws.onclose = (ev) => {
    clearInterval(ping);
    if (!closed) term.write(`\r\n[connection closed${ev.reason ? `: ${ev.reason}` : ""}]\r\n`);
    for (const p of pending.values()) p.reject(new Error("connection closed"));
    pending.clear();
  };
  term.onData((s) => {
    if (pid === null) return;
    notify("$sandbox.stream.enqueue", { streamId: STDIN, data: b64encode(enc.encode(s)) });
  });
  term.onResize(({ rows, cols }) => {
    if (pid !== null) call("ptyResize", { pid, rows, cols }).catch(() => {});
  });

  return {
    term,
    close() {
      closed = true;
      clearInterval(ping);
      if (pid !== null) call("processKill", { pid, signal: "SIGHUP" }).catch(() => {}); // as a closed terminal does
      notify("$sandbox.stream.end", { streamId: STDIN });
      try {
        ws.close(1000, "terminal closed");
      } catch {
        /* already closed */
      }
      term.dispose();
    },
  };
}
