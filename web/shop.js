// The shopper page: the sale with a countdown and live stock, and a buy
// button whose purchase is followed from "pending" to its outcome on the
// event stream.

import {
  adoptTokenFromFragment, authConfig, call, duration, followEvents, login, messageOf, money, newKey,
  saleIdFromUrl, session, sleep,
} from "./api.js";

const $ = (id) => document.getElementById(id);

/** Server clock minus ours, so the countdown follows the server. */
let clockSkewMs = 0;
let sale = null;
let purchase = null; // {reservation_id, status, reason?}
let streamAbort = null;

function showResult(kind, text) {
  const result = $("result");
  result.dataset.kind = kind;
  result.textContent = text;
}

function renderSale() {
  $("product").textContent = sale.product_name || "Flash sale";
  $("description").textContent = sale.product_description ?? "";
  $("state").textContent = sale.state;
  $("state").dataset.state = sale.state;
  $("price").textContent = money(sale.price, sale.currency);
  $("allotted").textContent = sale.stock;
  $("limit").textContent = sale.per_user_limit;
  const remaining = sale.remaining ?? 0;
  $("remaining").textContent = sale.remaining ?? "–";
  $("stock-bar").style.width = `${sale.stock ? (100 * remaining) / sale.stock : 0}%`;
  $("buy").disabled = sale.state !== "active" || remaining <= 0;
  $("buy").textContent = remaining <= 0 && sale.state === "active" ? "Sold out" : "Buy now";
  tick();
}

function tick() {
  if (!sale) return;
  const now = Date.now() + clockSkewMs;
  const starts = Date.parse(sale.starts_at);
  const ends = Date.parse(sale.ends_at);
  const text = now < starts ? `Starts in ${duration(starts - now)}`
    : now < ends ? `Ends in ${duration(ends - now)}`
    : "The sale has ended";
  $("countdown").textContent = text;
}

function renderPurchase(event) {
  // The stream can beat the 202: never step a settled purchase back to pending.
  const settled = purchase?.reservation_id === event.reservation_id && purchase.status !== "pending";
  if (settled && event.status === "pending") return;
  purchase = event;
  if (event.status === "pending") showResult("pending", "Reserved: confirming your order…");
  else if (event.status === "confirmed" && sale?.hold_seconds) {
    showResult("confirmed", "Ordered: it is held for you until you pay.");
  } else if (event.status === "confirmed") showResult("confirmed", "Purchase confirmed. It's yours!");
  else showResult("failed", `Purchase failed: ${event.reason ?? "the order could not be completed"}. You may try again.`);
}

/** How one of the shopper's checkout holds ended (the `order` event). */
function renderOrderEnd(order) {
  if (order.status === "paid") showResult("confirmed", "Paid. It's yours!");
  else if (order.status === "expired") showResult("failed", "Your hold expired unpaid; the unit is on sale again.");
  else if (order.status === "cancelled") showResult("failed", "Your order was cancelled; the unit is on sale again.");
}

function onSaleEvent(name, data) {
  if (name === "sale") {
    clockSkewMs = Date.parse(data.server_time) - Date.now();
    sale = data;
    renderSale();
  } else if (name === "purchase") {
    renderPurchase(data);
  } else if (name === "order") {
    renderOrderEnd(data);
  }
}

function onLink(state, status) {
  const text = { open: "live", down: "reconnecting…", refused: `stream refused (${status}); retrying` }[state];
  $("link").textContent = text;
  $("link").dataset.state = state;
  if (state === "refused" && status === 401) signOut();
}

/** Refusals a shopper can act on, by error code. */
function refusalText(reply) {
  const code = reply.body?.error?.code;
  switch (code) {
    case "ALREADY_PURCHASED":
      return ["already-purchased", `You have already purchased this item (limit ${sale.per_user_limit} per shopper).`];
    case "SOLD_OUT":
      return ["sold-out", "Sold out: every unit has been sold."];
    case "RATE_LIMITED":
      return ["rate-limited", `You are rate limited: too many attempts. Try again in ${reply.retryAfter} s.`];
    case "SALE_NOT_ACTIVE":
      return ["not-active", "The sale is not active right now."];
    default:
      return ["error", messageOf(reply, `The purchase was refused (${reply.status}).`)];
  }
}

/** One purchase intent: one idempotency key, reused for every retry, so a
 *  retried click can never buy twice. */
async function buy() {
  const button = $("buy");
  button.disabled = true;
  const key = newKey();
  showResult("sending", "Sending your purchase…");
  try {
    for (let attempt = 1; ; attempt++) {
      let reply;
      try {
        reply = await call("POST", "/api/purchase/attempt", {
          body: { sale_id: sale.sale_id },
          headers: { "Idempotency-Key": key },
        });
      } catch {
        reply = { status: 0, retryAfter: 1 };
      }
      if ((reply.status === 503 || reply.status === 0) && attempt < 4) {
        showResult("sending", "The shop is busy; retrying your purchase…");
        await sleep(reply.retryAfter * 1000);
        continue;
      }
      if (reply.status === 202) {
        renderPurchase({ reservation_id: reply.body.reservation_id, status: reply.body.status });
        watchPending(reply.body.reservation_id, reply.body.status_url);
      } else if (reply.status === 401) {
        signOut();
      } else if (reply.status === 503 || reply.status === 0) {
        showResult("error", "The shop is not answering. Try again in a moment: the same purchase is never made twice.");
      } else {
        showResult(...refusalText(reply));
      }
      return;
    }
  } finally {
    button.disabled = sale.state !== "active" || (sale.remaining ?? 0) <= 0;
  }
}

/** The stream brings the outcome; should it be down, the status endpoint
 *  is asked every 2 s once 5 s have passed. */
async function watchPending(reservationId, statusUrl) {
  await sleep(5000);
  while (purchase?.reservation_id === reservationId && purchase.status === "pending") {
    const reply = await call("GET", statusUrl).catch(() => null);
    if (reply?.status === 200 && reply.body.status !== "pending") renderPurchase(reply.body);
    await sleep(2000);
  }
}

async function start() {
  $("who").hidden = false;
  $("who-email").textContent = session.email;
  $("login").hidden = true;
  $("signed-out").hidden = true;
  const saleId = saleIdFromUrl();
  const query = saleId ? `?sale_id=${encodeURIComponent(saleId)}` : "";
  const status = await call("GET", `/api/flash-sale/status${query}`).catch(() => null);
  if (!status || status.status !== 200) {
    if (status?.status === 401) return signOut();
    $("no-sale").hidden = false;
    $("no-sale").textContent = status ? messageOf(status, "No sale to show.") : "The shop is not answering.";
    return;
  }
  onSaleEvent("sale", status.body);
  $("sale").hidden = false;
  streamAbort = new AbortController();
  followEvents(`/api/flash-sale/events?sale_id=${status.body.sale_id}`, {
    onEvent: onSaleEvent, onLink, signal: streamAbort.signal,
  });
}

function signOut() {
  streamAbort?.abort();
  session.clear();
  sale = null;
  purchase = null;
  $("sale").hidden = true;
  $("who").hidden = true;
  showResult("", "");
  offerSignIn();
}

/** The development login in `dev` mode; in `oidc` mode shoppers arrive
 *  from the shop with their token (adoptTokenFromFragment). */
async function offerSignIn() {
  const { mode } = await authConfig();
  // A token may have arrived while the configuration was asked for.
  if (session.token) return;
  if (mode === "dev") $("login").hidden = false;
  else $("signed-out").hidden = false;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await login($("email").value.trim());
    await start();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});
$("logout").addEventListener("click", signOut);
$("buy").addEventListener("click", buy);
setInterval(tick, 1000);

adoptTokenFromFragment();
if (session.token) start(); else offerSignIn();
// A shop may hand the token over after the page loaded (same document).
window.addEventListener("hashchange", () => {
  if (!adoptTokenFromFragment()) return;
  streamAbort?.abort();
  $("login").hidden = true;
  $("signed-out").hidden = true;
  start();
});
