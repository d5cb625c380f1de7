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
let order = null; // a held order awaiting payment: {id, pay_by, amount, currency}
let streamAbort = null;
let devMode = false;
let waiting = null; // our place on the waitlist: {position, length}

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
  renderWaitlist();
  tick();
}

/** The waitlist of a sold-out sale with holds: join, our place, leave. */
function renderWaitlist() {
  const open = sale?.state === "active" && sale.hold_seconds && (sale.remaining ?? 0) <= 0;
  $("waitlist").hidden = !(waiting || (open && !order));
  $("waitlist-join").hidden = Boolean(waiting);
  $("waitlist-leave").hidden = !waiting;
  $("waitlist-place").textContent = waiting
    ? `You are number ${waiting.position} of ${waiting.length} on the waitlist: a unit that comes back is offered to you in turn.`
    : "Sold out. Units come back when buyers do not pay: wait for one.";
}

/** Reads our waitlist standing: waiting (with our place) or offered. */
async function refreshWaitlist() {
  if (!sale?.hold_seconds) return;
  const reply = await call("GET", `/api/flash-sale/${sale.sale_id}/waitlist`).catch(() => null);
  if (reply?.status === 200 && reply.body.state === "waiting") {
    waiting = { position: reply.body.position, length: reply.body.length };
  } else {
    waiting = null;
    const offer = reply?.status === 200 ? reply.body.offer : null;
    if (offer?.status === "awaiting_payment" && order?.id !== offer.id) showOffer(offer);
  }
  renderWaitlist();
}

async function joinWaitlist() {
  const reply = await call("POST", `/api/flash-sale/${sale.sale_id}/waitlist`).catch(() => null);
  if (reply?.status === 200 || reply?.status === 201) {
    waiting = { position: reply.body.position, length: reply.body.length };
    showResult("pending", "You are on the waitlist.");
  } else if (reply) {
    showResult("error", messageOf(reply, `The waitlist refused you (${reply.status}).`));
  }
  renderWaitlist();
}

async function leaveWaitlist() {
  const reply = await call("DELETE", `/api/flash-sale/${sale.sale_id}/waitlist`).catch(() => null);
  if (reply?.status === 204 || reply?.status === 404) {
    waiting = null;
    showResult("", "");
  }
  renderWaitlist();
}

/** A unit the waitlist gave us: a hold of our own to pay by its pay_by. */
function showOffer(offer) {
  waiting = null;
  showResult("confirmed", "A unit came back and is offered to you: pay for it before the time runs out.");
  holdOrder(offer);
  renderWaitlist();
}

function tick() {
  if (order) {
    const left = Date.parse(order.pay_by) - (Date.now() + clockSkewMs);
    $("pay-by").textContent = left > 0 ? `pay within ${duration(left)}` : "the time to pay is over";
    $("pay").disabled = left <= 0;
  }
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
    showHold(event.reservation_id);
  } else if (event.status === "confirmed") showResult("confirmed", "Purchase confirmed. It's yours!");
  else showResult("failed", `Purchase failed: ${event.reason ?? "the order could not be completed"}. You may try again.`);
}

/** One of the shopper's checkout holds changed (the `order` event): it
 *  ended, or the waitlist offered them a unit. */
async function renderOrderChange(changed) {
  if (changed.status === "awaiting_payment") {
    const reply = await call("GET", `/api/orders/${changed.order_id}`).catch(() => null);
    if (reply?.status === 200 && reply.body.status === "awaiting_payment") showOffer(reply.body);
    return;
  }
  if (order?.id === changed.order_id) hideHold();
  if (changed.status === "paid") showResult("confirmed", "Paid. It's yours!");
  else if (changed.status === "expired") showResult("failed", "Your hold expired unpaid; the unit is on sale again (or offered to the waitlist).");
  else if (changed.status === "cancelled") showResult("failed", "Your order was cancelled; the unit is on sale again (or offered to the waitlist).");
}

/** The held order of a confirmed purchase: what to pay and by when. The
 *  worker has written it by the time the purchase is confirmed; asked a few
 *  times in case this node reads PostgreSQL a moment behind. */
async function showHold(reservationId) {
  for (let attempt = 0; attempt < 5 && !order; attempt++) {
    const reply = await call("GET", `/api/purchase/status?reservation_id=${reservationId}`).catch(() => null);
    const held = reply?.status === 200 ? reply.body.order : null;
    if (held?.status === "awaiting_payment") {
      holdOrder(held);
      return;
    }
    if (held) return; // already paid, expired or cancelled
    await sleep(500);
  }
}

function holdOrder(held) {
  order = held;
  $("pay-amount").textContent = money(held.amount, held.currency);
  $("pay").hidden = !devMode;
  $("pay").disabled = false;
  $("hold").hidden = false;
  tick();
}

function hideHold() {
  order = null;
  $("hold").hidden = true;
}

/** Development only: the node plays the payment provider. */
async function pay() {
  if (!order) return;
  $("pay").disabled = true;
  const reply = await call("POST", `/api/dev/orders/${order.id}/pay`, { body: {} }).catch(() => null);
  if (reply?.status === 200 && reply.body.outcome === "paid") {
    hideHold();
    showResult("confirmed", "Paid. It's yours!");
  } else {
    showResult("error", reply ? messageOf(reply, `The payment was refused (${reply.status}).`) : "The shop is not answering.");
    $("pay").disabled = false;
  }
}

async function cancelOrder() {
  if (!order) return;
  const reply = await call("POST", `/api/orders/${order.id}/cancel`).catch(() => null);
  if (reply?.status === 200) {
    hideHold();
    showResult("failed", "Your order was cancelled; the unit is on sale again.");
  } else if (reply) {
    showResult("error", messageOf(reply, `The order could not be cancelled (${reply.status}).`));
  }
}

function onSaleEvent(name, data) {
  if (name === "sale") {
    clockSkewMs = Date.parse(data.server_time) - Date.now();
    sale = data;
    renderSale();
  } else if (name === "purchase") {
    renderPurchase(data);
  } else if (name === "order") {
    renderOrderChange(data);
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
  devMode = (await authConfig()).mode === "dev";
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
  refreshWaitlist();
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
  waiting = null;
  hideHold();
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
$("pay").addEventListener("click", pay);
$("cancel-order").addEventListener("click", cancelOrder);
$("waitlist-join").addEventListener("click", joinWaitlist);
$("waitlist-leave").addEventListener("click", leaveWaitlist);
setInterval(tick, 1000);
// Our place moves up as others are offered units or leave.
setInterval(() => { if (waiting) refreshWaitlist(); }, 5000);

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
