// What both pages share: the session (a token from the development login,
// from the shop that embeds the page, or pasted by an operator), JSON calls
// to the API, and a Server-Sent Events reader.
//
// The event stream is read with fetch rather than EventSource because
// EventSource cannot send the Authorization header, and a token in the URL
// would end up in access logs.

// Each page keeps its own sign-in (<body data-session="shop|admin">), so a
// shopper session never stands in for an operator's, nor the reverse.
const SCOPE = `flashsale.${document.body.dataset.session}`;

export const session = {
  get token() { return localStorage.getItem(`${SCOPE}.token`); },
  get email() { return localStorage.getItem(`${SCOPE}.email`); },
  save(token, email) {
    localStorage.setItem(`${SCOPE}.token`, token);
    localStorage.setItem(`${SCOPE}.email`, email);
  },
  clear() {
    localStorage.removeItem(`${SCOPE}.token`);
    localStorage.removeItem(`${SCOPE}.email`);
  },
};

/** One API call. Resolves to {status, body, retryAfter}; rejects only when
 *  the network failed (no answer at all). */
export async function call(method, path, { body, headers = {}, token = session.token } = {}) {
  const request = { method, headers: { ...headers }, cache: "no-store" };
  if (token) request.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    request.headers["Content-Type"] = "application/json";
    request.body = JSON.stringify(body);
  }
  const response = await fetch(path, request);
  let parsed = null;
  try { parsed = await response.json(); } catch { /* not JSON: leave null */ }
  const retryAfter = Number(response.headers.get("Retry-After")) || 1;
  return { status: response.status, body: parsed, retryAfter };
}

/** The error message of an error reply, or a fallback. */
export function messageOf(reply, fallback) {
  return reply.body?.error?.message ?? fallback;
}

/** A token handed over in the URL fragment, as a shop that embeds or links
 *  to the page does in `oidc` mode: `/#access_token=<the shopper's access
 *  token from the shop's identity provider>`. The fragment never reaches a
 *  server or an access log; it is taken into the session and removed from
 *  the address bar at once. Returns whether a token was taken. */
export function adoptTokenFromFragment() {
  const token = new URLSearchParams(location.hash.slice(1)).get("access_token");
  if (!token) return false;
  history.replaceState(null, "", location.pathname + location.search);
  // A link can carry anyone's token: never swap a signed-in session for it
  // silently (the shopper would buy on someone else's account).
  const replaces = session.token && session.token !== token;
  if (replaces && !confirm("Switch to the account your shop signed you in with?")) return false;
  session.save(token, "your shop account");
  return true;
}

/** How this deployment identifies callers: {mode: "dev" | "oidc", issuer}. */
export async function authConfig() {
  const reply = await call("GET", "/api/auth/config", { token: null }).catch(() => null);
  return reply?.status === 200 ? reply.body : { mode: "oidc" };
}

export async function login(email) {
  const reply = await call("POST", "/api/auth/login", { body: { email }, token: null });
  if (reply.status !== 200) throw new Error(messageOf(reply, `login failed (${reply.status})`));
  session.save(reply.body.token, reply.body.user?.email ?? email);
  return reply.body;
}

/** An idempotency key per purchase intent. crypto.getRandomValues works on
 *  plain-http origins too, unlike crypto.randomUUID. */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Follows `path` as Server-Sent Events until `signal` aborts, reconnecting
 *  after a drop (every connection starts with the present state).
 *  onEvent(name, data); onLink("open" | "down" | "refused", status). */
export async function followEvents(path, { onEvent, onLink, signal, token = session.token }) {
  let retryMs = 2000;
  while (!signal.aborted) {
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const response = await fetch(path, { headers, cache: "no-store", signal });
      if (!response.ok) {
        onLink("refused", response.status);
        if (response.status === 401 || response.status === 404) return;
        await sleep(retryMs);
        continue;
      }
      onLink("open", response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseBlock(block);
          if (event.retry) retryMs = event.retry;
          if (event.data !== null) onEvent(event.name, JSON.parse(event.data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    onLink("down");
    await sleep(retryMs);
  }
}

function parseBlock(block) {
  const event = { name: "message", data: null, retry: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.name = value;
    else if (field === "data") data.push(value);
    else if (field === "retry") event.retry = Number(value) || null;
  }
  if (data.length) event.data = data.join("\n");
  return event;
}

/** 4999 EUR minor units -> "49.99 EUR". */
export function money(minor, currency) {
  return `${(minor / 100).toFixed(2)} ${currency}`;
}

/** Milliseconds -> "1 d 02:03:04" / "02:03:04". */
export function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(total / 86400);
  const hms = [Math.floor(total / 3600) % 24, Math.floor(total / 60) % 60, total % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  return days ? `${days} d ${hms}` : hms;
}

/** The sale id in ?sale_id=, or null for "the current sale". */
export function saleIdFromUrl() {
  return new URLSearchParams(location.search).get("sale_id");
}
