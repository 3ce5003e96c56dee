// Live updates from the server-sent events of /live: inbox rows and counts,
// the open ticket's conversation, presence of other agents and the bell.
// Also reports this agent's own presence on a ticket page.

let ctx;
let status; // #live-status
let offline = false;
let noticeTimer = 0;

// ---- connection -----------------------------------------------------------

let source = null;
let retryDelay = 1000;
let retryTimer = 0;
let hadError = false;

function connect() {
  clearTimeout(retryTimer);
  // On a ticket page the server starts with who else is on this ticket.
  const main = document.getElementById("main");
  const ticket = main?.dataset.ticketId;
  source = new EventSource(ticket ? `/live?ticket=${encodeURIComponent(ticket)}` : "/live");
  source.addEventListener("open", () => {
    retryDelay = 1000;
    setOffline(false);
    // Events sent while we were away are lost: catch up once.
    if (hadError) {
      hadError = false;
      catchUp();
    }
  });
  source.addEventListener("error", () => {
    hadError = true;
    setOffline(true);
    // CONNECTING means the browser retries by itself; CLOSED (e.g. a non-200
    // answer) means it gave up, so we retry with a capped backoff.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    }
  });
  on("ticket", onTicket);
  on("counts", setCounts);
  on("presence", onPresence);
  on("notification", (d) => setBell(d.unread));
  on("signedout", onSignedOut);
}

function on(name, handler) {
  source.addEventListener(name, (e) => {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    if (data && typeof data === "object") handler(data);
  });
}

function disconnect() {
  clearTimeout(retryTimer);
  source?.close();
  source = null;
}

function catchUp() {
  if (rowsBody()) {
    scheduleRows();
    if (document.querySelector("[data-count]")) {
      ctx.get("/inbox/counts", { accept: "application/json" })
        .then((r) => r.json())
        .then(setCounts)
        .catch(() => {});
    }
  }
  if (ctx.ticketId && document.getElementById("conversation")) refreshConversation();
}

// ---- #live-status ---------------------------------------------------------

function statusElement() {
  let el = document.getElementById("live-status");
  if (!el) {
    el = document.createElement("p");
    el.id = "live-status";
    el.className = "live-status";
    el.setAttribute("role", "status");
    // Inside a landmark, so all visible text stays in one.
    (document.querySelector("body > header") || document.querySelector("header") || document.getElementById("main") || document.body).append(el);
  }
  return el;
}

function setOffline(value) {
  offline = value;
  document.documentElement.dataset.live = value ? "error" : "open";
  status.classList.toggle("offline", value);
  if (value) {
    clearTimeout(noticeTimer);
    if (status.textContent !== ctx.t("offline")) status.textContent = ctx.t("offline");
  } else if (status.textContent === ctx.t("offline")) {
    status.textContent = "";
  }
}

function notice(text) {
  if (offline) return;
  status.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    if (!offline) status.textContent = "";
  }, 5000);
}

// ---- ticket events --------------------------------------------------------

function onTicket(data) {
  if (rowsBody()) scheduleRows();
  if (
    ctx.ticketId &&
    String(data.ticket_id) === ctx.ticketId &&
    CONVERSATION_EVENTS.has(data.type)
  ) {
    refreshConversation();
  }
}

// Events that change what the open ticket's conversation shows.
const CONVERSATION_EVENTS = new Set([
  "message.received",
  "message.sent",
  "note.added",
  "message.delivered",
  "message.failed",
  "ticket.merged_in",
]);

// The session ended (signed out here or elsewhere, expired): stop listening and
// say so; the agent's text stays on the page (and its draft on the server).
function onSignedOut() {
  disconnect();
  document.documentElement.dataset.live = "signedout";
  status.classList.add("offline");
  status.textContent = ctx.t("signed_out");
}

function rowsBody() {
  const tbody = document.querySelector("table#tickets > tbody");
  return tbody?.dataset.rowsUrl ? tbody : null;
}

let rowsTimer = 0;
let rowsAbort = null;

function scheduleRows() {
  clearTimeout(rowsTimer);
  rowsTimer = setTimeout(refreshRows, 150);
}

async function refreshRows() {
  const tbody = rowsBody();
  if (!tbody) return;
  rowsAbort?.abort();
  const abort = (rowsAbort = new AbortController());
  let html;
  try {
    const res = await ctx.get(tbody.dataset.rowsUrl, { signal: abort.signal, accept: "text/html" });
    html = await res.text();
  } catch {
    return;
  }
  if (abort.signal.aborted) return;

  // Remember what the agent had in hand, by ticket id.
  const selected = tbody.querySelector("tr.ticket.selected")?.dataset.ticketId;
  const checked = new Set(
    [...tbody.querySelectorAll("input[name=ticket]:checked")].map((c) => c.value),
  );
  const focus = focusKey(tbody, "tr[data-ticket-id]", "ticketId");

  const template = document.createElement("template");
  template.innerHTML = html; // our own server's escaped row markup
  tbody.replaceChildren(template.content);

  for (const box of tbody.querySelectorAll("input[name=ticket]")) {
    if (checked.has(box.value)) box.checked = true;
  }
  if (selected) {
    const row = tbody.querySelector(`tr.ticket[data-ticket-id="${CSS.escape(selected)}"]`);
    if (row) ctx.select(row, { scroll: false });
  }
  restoreFocus(tbody, focus, "tr[data-ticket-id]", "ticketId");
  tbody.dispatchEvent(new CustomEvent("pd:rows", { bubbles: true }));
  notice(ctx.t("new_tickets"));
}

let conversationAbort = null;

async function refreshConversation() {
  conversationAbort?.abort();
  const abort = (conversationAbort = new AbortController());
  let html;
  try {
    // After a refused send (409) the address is the POST's; read the ticket itself then.
    const own = `/tickets/${encodeURIComponent(ctx.ticketId)}`;
    const url = location.pathname === own ? location.href : own;
    const res = await ctx.get(url, { signal: abort.signal, accept: "text/html" });
    html = await res.text();
  } catch {
    return;
  }
  if (abort.signal.aborted) return;
  const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("conversation");
  const current = document.getElementById("conversation");
  if (!fresh || !current || fresh.localName !== "ol") return;

  // Keep expanded quotes and focus where the agent left them.
  const open = new Set();
  for (const d of current.querySelectorAll("li.message[data-message-id] details[open]")) {
    const li = d.closest("li.message");
    open.add(`${li.dataset.messageId}/${[...li.querySelectorAll("details")].indexOf(d)}`);
  }
  const focus = focusKey(current, "li[data-message-id]", "messageId");

  const node = document.adoptNode(fresh);
  for (const li of node.querySelectorAll("li.message[data-message-id]")) {
    li.querySelectorAll("details").forEach((d, i) => {
      if (open.has(`${li.dataset.messageId}/${i}`)) d.open = true;
    });
  }
  current.replaceWith(node);
  restoreFocus(node, focus, "li[data-message-id]", "messageId");
}

// Which focusable element (by item id and position) holds focus inside `box`.
const FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";

function focusKey(box, itemSelector, idKey) {
  const active = document.activeElement;
  if (!active || !box.contains(active)) return null;
  const item = active.closest(itemSelector);
  if (!item) return null;
  return { id: item.dataset[idKey], index: [...item.querySelectorAll(FOCUSABLE)].indexOf(active) };
}

function restoreFocus(box, key, itemSelector, idKey) {
  if (!key) return;
  const item = [...box.querySelectorAll(itemSelector)].find((el) => el.dataset[idKey] === key.id);
  item?.querySelectorAll(FOCUSABLE)[key.index]?.focus({ preventScroll: true });
}

// ---- counts, bell, presence -----------------------------------------------

function setCounts(counts) {
  for (const [view, n] of Object.entries(counts)) {
    for (const el of document.querySelectorAll(`[data-count="${CSS.escape(view)}"]`)) {
      el.textContent = String(n);
    }
  }
}

function setBell(unread) {
  const el = document.getElementById("bell-count");
  if (!el) return;
  const n = Number(unread) || 0;
  el.textContent = String(n);
  el.hidden = n === 0;
}

function onPresence(data) {
  const el = document.getElementById("presence");
  if (!el || !ctx.ticketId || String(data.ticket_id) !== ctx.ticketId) return;
  const agents = Array.isArray(data.agents) ? data.agents : [];
  const parts = agents
    .filter((a) => a && (a.state === "viewing" || a.state === "replying"))
    .map((a) => ctx.t(`presence_${a.state}`, { name: a.name ?? "" }));
  const text = parts.join(", ");
  if (el.textContent !== text) el.textContent = text;
}

// ---- own presence on a ticket page ----------------------------------------

let heartbeat = 0;
let lastReplying = 0;

function presence(state, keepalive = false) {
  ctx
    .send(`/tickets/${encodeURIComponent(ctx.ticketId)}/presence`, { json: { state }, keepalive })
    .catch(() => {});
}

function startPresence() {
  // While the agent typed recently the heartbeat keeps saying "replying",
  // so it does not flip others' view back to "viewing" mid-sentence.
  const beat = () => presence(Date.now() - lastReplying < 20000 ? "replying" : "viewing");
  beat();
  clearInterval(heartbeat);
  heartbeat = setInterval(beat, 20000);
}

function watchPresence() {
  startPresence();
  const body = document.querySelector("form#composer textarea#body");
  body?.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastReplying >= 5000) {
      lastReplying = now;
      presence("replying");
    }
  });
}

// ---- wiring -----------------------------------------------------------------

export function init(context) {
  ctx = context;
  status = statusElement();
  setBell(document.getElementById("bell-count")?.textContent);
  connect();
  if (ctx.ticketId) watchPresence();

  window.addEventListener("pagehide", () => {
    if (ctx.ticketId) {
      clearInterval(heartbeat);
      presence("left", true);
    }
    // A closed stream lets the page enter the back/forward cache.
    disconnect();
  });
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    hadError = true; // catch up on what happened while cached
    connect();
    if (ctx.ticketId) startPresence();
  });
}
