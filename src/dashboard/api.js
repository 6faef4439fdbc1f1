// The API client: the token lives in this tab's sessionStorage and goes only into the Authorization
// header of same-origin requests (and, for the terminal's WebSocket, a subprotocol); never in a URL.
const KEY = "hutch.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body, tok = token() } = {}) {
  const headers = { Authorization: `Bearer ${tok ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                            cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
  } catch (e) {
    throw new ApiError(0, "NETWORK", `hutchd is unreachable: ${e.message}`);
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, data?.code ?? "HTTP", data?.message ?? `${r.status} ${r.statusText}`);
  }
  return data;
}

// Query strings built from parts, each one encoded.
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of params) p.append(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}
