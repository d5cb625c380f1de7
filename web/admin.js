// The operator dashboard: live stock from the sale's event stream, the
// sale's stats polled every second (the API caches them ~2 s per node),
// rates per second computed from successive counters, and the controls.

import {
  adoptTokenFromFragment, call, followEvents, messageOf, newKey, saleIdFromUrl, session, sleep,
} from "./api.js";

const $ = (id) => document.getElementById(id);
const WINDOW_SECONDS = 120;
const SERIES = [
  { key: "accepted", label: "accepted", color: "#1a7f37" },
  { key: "sold_out", label: "sold out", color: "#cf222e" },
  { key: "already_purchased", label: "already purchased", color: "#9a6700" },
  { key: "not_active", label: "not active", color: "#8250df" },
  { key: "above_limit", label: "above limit", color: "#0969da" },
  { key: "idempotency_key_reused", label: "key reused", color: "#57606a" },
  { key: "rate_limited", label: "rate limited", color: "#bc4c00" },
];

let saleId = null;
let streamAbort = null;
let pollTimer = null;
let previous = null; // last stats, for rates
let rates = []; // [{at, accepted, sold_out, ...}]
/** End and cancel never reopen: each asks first. */
const IRREVERSIBLE = {
  end: {
    text: "End the sale now? Nobody can buy from then on; orders awaiting payment may still be paid until their deadline. A sale never reopens.",
    yes: "Yes, end it", done: "Ended.",
  },
  cancel: {
    text: "Cancel the sale now? Nobody can buy from then on, and every order still awaiting payment is cancelled within seconds (a payment arriving from now on is recorded as a refund). A sale never reopens.",
    yes: "Yes, cancel it", done: "Cancelled.",
  },
};
let confirming = null;

function counters(stats) {
  return { accepted: stats.accepted, ...stats.rejected };
}

function renderStats(stats) {
  $("state").textContent = stats.state;
  if (stats.remaining !== null) $("remaining").textContent = stats.remaining;
  $("allotted").textContent = `of ${stats.allotted}`;
  $("accepted").textContent = stats.accepted;
  $("rejected").textContent = Object.values(stats.rejected).reduce((a, b) => a + b, 0);
  $("pending").textContent = stats.pending;
  $("confirmed").textContent = stats.confirmed_units;
  $("queue").textContent = stats.queue.waiting;
  $("queue-detail").textContent = `${stats.queue.scheduled} retrying · ${stats.queue.dead} dead`;
  $("drain-lag").textContent = stats.drain_lag_ms === null ? "none" : `${stats.drain_lag_ms} ms`;
  $("drift").textContent = stats.drift ?? "–";
  $("drift-at").textContent = stats.drift_checked_at
    ? `checked ${new Date(stats.drift_checked_at).toLocaleTimeString()}` : "";
  renderCheckout(stats.checkout);
  renderLatency(stats.purchase_latency);

  const at = Date.parse(stats.computed_at);
  if (previous && at > previous.at) {
    const seconds = (at - previous.at) / 1000;
    const now = counters(stats);
    const rate = { at };
    for (const { key } of SERIES) rate[key] = Math.max(0, (now[key] - previous.counts[key]) / seconds);
    rates.push(rate);
    rates = rates.filter((r) => r.at >= at - WINDOW_SECONDS * 1000);
    drawChart();
  }
  if (!previous) {
    // A zero baseline, so the first measured rate already draws a line.
    rates.push(Object.fromEntries([["at", at], ...SERIES.map(({ key }) => [key, 0])]));
  }
  if (!previous || at > previous.at) previous = { at, counts: counters(stats) };
}

function renderCheckout(checkout) {
  $("checkout").hidden = !checkout;
  if (!checkout) return;
  $("awaiting").textContent = checkout.awaiting_payment;
  $("paid").textContent = checkout.paid;
  $("expired").textContent = checkout.expired;
  $("cancelled").textContent = checkout.cancelled;
  $("refunds").textContent = checkout.refunds_required;
  $("mismatches").textContent = `${checkout.amount_mismatches} wrong amount`;
  $("waitlist").textContent = checkout.waitlist;
  $("offers").textContent = `${checkout.offers} offered so far`;
}

/** The cluster's purchase latency as the API read it: the last ~10 s, or
 *  since the nodes started when it has no earlier read to compare with. */
function renderLatency(latency) {
  if (!latency) return;
  const format = (ms) => (ms === null ? "–" : ms < 10 ? ms.toFixed(1) : ms.toFixed(0));
  $("latency").textContent = latency.p50_ms === null ? "–"
    : `${format(latency.p50_ms)} · ${format(latency.p95_ms)} · ${format(latency.p99_ms)} ms`;
  const span = latency.window_seconds === null ? "since the nodes started"
    : `last ${Math.round(latency.window_seconds)} s`;
  $("latency-detail").textContent = `${span}, ${latency.requests} answers, ${latency.nodes} node(s)`;
}

function drawChart() {
  const svg = $("chart");
  const width = 600, height = 180;
  const end = rates.at(-1)?.at ?? Date.now();
  const peak = Math.max(1, ...rates.flatMap((r) => SERIES.map(({ key }) => r[key])));
  const x = (at) => width - ((end - at) / (WINDOW_SECONDS * 1000)) * width;
  const y = (value) => height - 4 - (value / peak) * (height - 20);
  const lines = SERIES.map(({ key, color }) => {
    const points = rates.map((r) => `${x(r.at).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points}"/>`;
  });
  svg.innerHTML = lines.join("");
  $("chart-peak").textContent = `top of the chart: ${peak.toFixed(0)}/s`;
  const latest = rates.at(-1);
  $("legend").replaceChildren(...SERIES.map(({ key, label, color }) => {
    const entry = document.createElement("span");
    entry.className = "entry";
    const swatch = document.createElement("b");
    swatch.textContent = "■ ";
    swatch.style.color = color;
    const rate = document.createElement("span");
    rate.dataset.rate = key;
    rate.textContent = latest ? latest[key].toFixed(1) : "0";
    entry.append(swatch, `${label} `, rate, "/s");
    return entry;
  }));
}

async function poll() {
  const reply = await call("GET", `/api/admin/flash-sales/${saleId}/stats`).catch(() => null);
  if (!reply) return problem("The API is not answering; retrying.");
  if (reply.status === 200) { problem(null); renderStats(reply.body); }
  else if (reply.status === 401) signOut();
  else problem(messageOf(reply, `stats answered ${reply.status}`));
}

function problem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text ?? "";
}

async function show(requested) {
  streamAbort?.abort();
  clearInterval(pollTimer);
  previous = null;
  rates = [];
  confirming = null;
  $("confirm").hidden = true;
  const query = requested ? `?sale_id=${encodeURIComponent(requested)}` : "";
  const status = await call("GET", `/api/flash-sale/status${query}`).catch(() => null);
  if (status?.status !== 200) {
    return problem(status ? messageOf(status, "no such sale") : "The API is not answering.");
  }
  saleId = status.body.sale_id;
  $("sale-id").value = saleId;
  history.replaceState(null, "", `?sale_id=${saleId}`);
  streamAbort = new AbortController();
  followEvents(`/api/flash-sale/events?sale_id=${saleId}`, {
    signal: streamAbort.signal,
    onEvent: (name, data) => {
      if (name !== "sale") return;
      $("remaining").textContent = data.remaining ?? "–";
      $("state").textContent = data.state;
    },
    onLink: (state) => {
      $("link").textContent = state === "open" ? "live" : "reconnecting…";
      $("link").dataset.state = state;
    },
  });
  await poll();
  pollTimer = setInterval(poll, 1000);
}

/** The buttons that change the sale, and the sale picker: off while a
 *  change is on its way, so a double click sends it once and it stays
 *  with the sale it was made for. */
const CONTROLS = ["pause", "resume", "add-stock", "end", "cancel", "confirm-yes", "pick-show"];
/** Changes whose answer never came, by sale and body, with their keys: the
 *  same change sent again reuses its key, so what already happened is not
 *  done twice. */
const unanswered = new Map();

/** One change under one idempotency key, retried with it after a lost
 *  answer or a 503: "add 100 units" is added once. */
async function act(body, done) {
  const sale = saleId;
  const sent = `${sale} ${JSON.stringify(body)}`;
  const key = unanswered.get(sent) ?? newKey();
  for (const id of CONTROLS) $(id).disabled = true;
  try {
    let reply = null;
    for (let attempt = 1; ; attempt++) {
      reply = await call("PATCH", `/api/admin/flash-sales/${sale}`, {
        body, headers: { "Idempotency-Key": key },
      }).catch(() => null);
      if ((reply && reply.status !== 503) || attempt === 3) break;
      await sleep((reply?.retryAfter ?? 1) * 1000);
    }
    const answered = reply && reply.status !== 503;
    if (answered) unanswered.delete(sent); else unanswered.set(sent, key);
    $("action-result").textContent = !answered
      ? "No answer: the change may or may not have been made. Sending the same change again is safe; it is never made twice."
      : reply.status === 200 ? done : messageOf(reply, `refused (${reply.status})`);
  } finally {
    for (const id of CONTROLS) $(id).disabled = false;
  }
}

async function start() {
  $("login").hidden = true;
  $("who").hidden = false;
  $("who-email").textContent = session.email;
  $("dashboard").hidden = false;
  await show(saleIdFromUrl());
}

function signOut() {
  streamAbort?.abort();
  clearInterval(pollTimer);
  session.clear();
  $("dashboard").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
}

/** Keeps a pasted token if the API takes it as an admin's. */
$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const token = $("token").value.trim();
  const reply = await call("GET", "/api/admin/audit?limit=1", { token }).catch(() => null);
  if (reply?.status === 200) {
    session.save(token, "operator");
    await start();
  } else {
    $("login-error").textContent = !reply ? "The API is not answering."
      : reply.status === 403 ? "This token is not an admin's." : messageOf(reply, `refused (${reply.status})`);
  }
});
$("logout").addEventListener("click", signOut);
$("pick").addEventListener("submit", (event) => { event.preventDefault(); show($("sale-id").value.trim()); });
$("pause").addEventListener("click", () => act({ action: "pause" }, "Paused."));
$("resume").addEventListener("click", () => act({ action: "resume" }, "Resumed."));
for (const action of Object.keys(IRREVERSIBLE)) {
  $(action).addEventListener("click", () => {
    confirming = action;
    $("confirm-text").textContent = IRREVERSIBLE[action].text;
    $("confirm-yes").textContent = IRREVERSIBLE[action].yes;
    $("confirm").hidden = false;
  });
}
$("confirm-yes").addEventListener("click", () => {
  const action = confirming;
  confirming = null;
  $("confirm").hidden = true;
  if (action) act({ action }, IRREVERSIBLE[action].done);
});
$("confirm-no").addEventListener("click", () => {
  confirming = null;
  $("confirm").hidden = true;
});
$("add-stock").addEventListener("click", () => {
  const amount = Number($("add-amount").value);
  act({ add_stock: amount }, `Added ${amount} units.`);
});

adoptTokenFromFragment();
if (session.token) start(); else $("login").hidden = false;
