// Entry module of the agent workspace, loaded on every signed-in page.
// Asset names carry a content hash, so siblings are found through the
// `<meta name="pd-assets">` map and loaded with dynamic import(). Each sibling
// exports `init(ctx)`; `ctx` holds what they share (strings, CSRF, selection).

const root = document.documentElement;

function readJson(text, fallback) {
  try {
    const value = JSON.parse(text || "");
    return value && typeof value === "object" ? value : fallback;
  } catch {
    return fallback;
  }
}

const assets = readJson(document.querySelector('meta[name="pd-assets"]')?.content, {});
const strings = readJson(document.getElementById("pd-i18n")?.textContent, {});
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
const main = document.getElementById("main");

const ctx = {
  lang: root.lang || "en",
  // The ticket id when this is a ticket page, else null.
  ticketId: main?.dataset.ticketId || null,

  // Catalogue string with `{name}` placeholders filled in; the key itself when
  // the page did not provide it, so a missing string is visible, not blank.
  t(key, vars = {}) {
    const text = typeof strings[key] === "string" ? strings[key] : key;
    return text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
  },

  // A state-changing request to our own server: CSRF header, cookies, JSON body.
  send(url, { method = "POST", json, keepalive = false, signal } = {}) {
    const headers = { "X-CSRF-Token": csrf };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      credentials: "same-origin",
      keepalive,
      signal,
    });
  },

  // A read from our own server. Redirects (an expired session sends us to
  // /signin) count as failure so callers never insert a sign-in page.
  async get(url, { signal, accept } = {}) {
    const res = await fetch(url, {
      credentials: "same-origin",
      signal,
      headers: accept ? { Accept: accept } : {},
    });
    if (!res.ok || res.redirected) throw new Error(`GET ${url}: ${res.status}`);
    return res;
  },

  // Row selection of the inbox; replaced by keys.js once it is loaded.
  select() {},
};

async function load(name) {
  const url = assets[name];
  if (!url) throw new Error(`pd-assets has no entry for ${name}`);
  const mod = await import(url);
  mod.init?.(ctx);
  return mod;
}

async function start() {
  // keys.js first: the others use its selection helpers through ctx.
  try {
    const keys = await load("keys.js");
    ctx.select = keys.select;
    ctx.selectedRow = keys.selectedRow;
  } catch (err) {
    console.error(err);
  }
  const rest = ["live.js"];
  if (document.querySelector("table#tickets")) rest.push("inbox.js");
  if (document.querySelector("form#composer")) rest.push("composer.js");
  const results = await Promise.allSettled(rest.map(load));
  for (const r of results) if (r.status === "rejected") console.error(r.reason);
  // Lets browser tests wait until every behaviour is wired.
  root.dataset.js = "ready";
}

// Times come from the server in UTC; show them in the agent's own time zone and language.
const timeFormat = new Intl.DateTimeFormat(root.lang || undefined, { dateStyle: "medium", timeStyle: "short" });

function localizeTimes(scope) {
  for (const el of scope.querySelectorAll("time[datetime]:not([data-local])")) {
    const at = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    el.textContent = timeFormat.format(at);
    el.dataset.local = "1";
  }
}

localizeTimes(document);
if (main) {
  new MutationObserver(() => localizeTimes(main)).observe(main, { childList: true, subtree: true });
}

start();
