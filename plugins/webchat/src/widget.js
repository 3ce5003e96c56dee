/* Plugdesk live chat: the widget a site embeds with
 *   <script src="https://HELPDESK/hooks/CHANNEL_ID/widget.js" async></script>
 * Served by the webchat channel, which fills in the settings where it says @config. Plain DOM
 * and inline styles inside a shadow root (so the site's CSS leaves it alone), no dependencies,
 * and every text from a person goes in with textContent, never as HTML. */
(function () {
  "use strict";

  var config = /*@config*/null;

  var script = document.currentScript;
  if (!script || !script.src) return;
  // https://HELPDESK/hooks/ID/widget.js?v=2 -> https://HELPDESK/hooks/ID
  var base = script.src.replace(/[?#].*$/, "").replace(/\/[^\/]*$/, "");
  var registry = (window.__plugdeskWebchat = window.__plugdeskWebchat || {});
  if (registry[base]) return; // the tag is on the page twice
  registry[base] = true;

  var defaults = { title: "Chat with us", greeting: "", color: "#2563eb", ask_email: true };
  var cfg = {};
  Object.keys(defaults).forEach(function (k) {
    var v = config && config[k];
    cfg[k] = typeof v === typeof defaults[k] ? v : defaults[k];
  });
  if (!/^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(cfg.color)) cfg.color = defaults.color;

  // Polling: fast while the chat is open, slow while it is closed, slower still once it has
  // been quiet for a while, and not at all before the visitor's first message.
  var OPEN_POLL_MS = 700;
  var CLOSED_POLL_MS = 5000;
  var QUIET_POLL_MS = 60000;
  var QUIET_AFTER_MS = 30 * 60000;
  var MAX_BACKOFF_MS = 60000;
  var MAX_LOG = 100;
  var MAX_TEXT_BYTES = 8192; // the server's limit
  var ID = /^[A-Za-z0-9-]{8,64}$/;
  var STORE_KEY = "plugdesk-webchat:" + base;
  var P = "plugdesk-webchat-"; // prefix of element ids, should the shadow root be missing

  function randomId() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID(); // secure contexts only
    var bytes = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
    else for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    var hex = "";
    for (var j = 0; j < 16; j++) hex += (bytes[j] + 256).toString(16).slice(1);
    return hex;
  }

  function byteLength(text) {
    if (typeof TextEncoder === "function") return new TextEncoder().encode(text).length;
    return unescape(encodeURIComponent(text)).length;
  }

  // State, kept in localStorage so the chat survives page loads. The session id is the
  // visitor's key to the conversation: whoever has it can read the replies.
  var memory = null; // when localStorage is blocked (some private modes)

  function isEntry(e) {
    return e && typeof e.id === "string" && typeof e.text === "string" && typeof e.me === "boolean";
  }

  function readStore() {
    var raw = memory;
    try {
      raw = window.localStorage.getItem(STORE_KEY) || memory;
    } catch (e) {
      // blocked: memory it is
    }
    var s = null;
    try {
      s = raw ? JSON.parse(raw) : null;
    } catch (e) {
      s = null;
    }
    if (!s || typeof s !== "object" || !ID.test(s.session)) s = { session: randomId() };
    var num = function (v) {
      return typeof v === "number" && v >= 0 ? v : 0;
    };
    return {
      session: s.session,
      name: typeof s.name === "string" ? s.name : "",
      email: typeof s.email === "string" ? s.email : "",
      started: s.started === true,
      after: num(s.after),
      unread: num(s.unread),
      last: num(s.last),
      log: Array.isArray(s.log) ? s.log.filter(isEntry) : [],
    };
  }

  function writeStore() {
    if (state.log.length > MAX_LOG) state.log = state.log.slice(state.log.length - MAX_LOG);
    memory = JSON.stringify(state);
    try {
      window.localStorage.setItem(STORE_KEY, memory);
    } catch (e) {
      // full or blocked: the chat still works for this page
    }
  }

  function findEntry(id) {
    for (var i = 0; i < state.log.length; i++) if (state.log[i].id === id) return state.log[i];
    return null;
  }

  var state = readStore();
  var open = false;

  // The DOM.
  function el(tag, css, attrs) {
    var e = document.createElement(tag);
    if (css) e.style.cssText = css;
    if (attrs) Object.keys(attrs).forEach(function (k) {
      e.setAttribute(k, attrs[k]);
    });
    return e;
  }

  var HIDDEN = "position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0";
  var FIELD = "box-sizing:border-box;width:100%;margin:2px 0 8px;padding:6px 8px;border:1px solid #d1d5db;border-radius:6px;font:inherit;color:inherit;background:#fff";
  var host, root, panel, launcher, badge, logbox, details, nameInput, emailInput, errorLine, input;
  var views = new Map(); // entry id -> {row, note, status}

  function build() {
    host = el("div", "all:initial;position:fixed;right:20px;bottom:20px;z-index:2147483000");
    root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var wrap = el("div", "font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#111827");
    root.appendChild(wrap);

    panel = el(
      "div",
      "display:none;flex-direction:column;position:absolute;right:0;bottom:72px;width:min(360px,calc(100vw - 40px));height:min(520px,calc(100vh - 120px));background:#fff;border-radius:12px;box-shadow:0 8px 32px rgba(0,0,0,.25);overflow:hidden",
      { id: P + "panel", role: "dialog", "aria-labelledby": P + "title" }
    );
    var header = el("div", "display:flex;align-items:center;justify-content:space-between;padding:12px 16px;color:#fff");
    header.style.background = cfg.color;
    var heading = el("h2", "margin:0;font-size:16px;font-weight:600", { id: P + "title" });
    heading.textContent = cfg.title;
    var close = el("button", "background:none;border:0;color:#fff;font-size:22px;line-height:1;cursor:pointer;padding:0 4px", {
      type: "button",
      "aria-label": "Close chat",
    });
    close.textContent = "\u00d7";
    close.addEventListener("click", function () {
      setOpen(false);
      launcher.focus();
    });
    header.appendChild(heading);
    header.appendChild(close);

    logbox = el("div", "flex:1;overflow-y:auto;padding:12px 16px;background:#f9fafb", {
      role: "log",
      "aria-live": "polite",
      "aria-label": "Conversation",
    });
    if (cfg.greeting) logbox.appendChild(bubble({ me: false, text: cfg.greeting }).row);

    var form = el("form", "margin:0;padding:8px 12px 12px;border-top:1px solid #e5e7eb");
    details = el("div");
    nameInput = field(details, "name", "Your name", "text", "name", 200, state.name);
    emailInput = field(details, "email", "Your e-mail (so we can follow up)", "email", "email", 254, state.email);
    errorLine = el("div", "color:#b91c1c;font-size:13px;margin-bottom:4px", { role: "alert" });
    var label = el("label", HIDDEN, { for: P + "input" });
    label.textContent = "Message";
    var row = el("div", "display:flex;gap:8px;align-items:flex-end");
    input = el("textarea", FIELD + ";margin:0;flex:1;resize:none;height:44px", {
      id: P + "input",
      rows: "2",
      placeholder: "Type a message\u2026",
    });
    input.addEventListener("keydown", function (e) {
      // Enter sends, Shift+Enter breaks the line; not while an input method is composing.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submit();
      }
    });
    var send = el("button", "padding:0 14px;height:44px;border:0;border-radius:6px;color:#fff;font:inherit;font-weight:600;cursor:pointer", {
      type: "submit",
    });
    send.style.background = cfg.color;
    send.textContent = "Send";
    row.appendChild(input);
    row.appendChild(send);
    form.appendChild(details);
    form.appendChild(errorLine);
    form.appendChild(label);
    form.appendChild(row);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      submit();
    });

    panel.appendChild(header);
    panel.appendChild(logbox);
    panel.appendChild(form);
    panel.addEventListener("keydown", function (e) {
      if (e.key === "Escape") {
        setOpen(false);
        launcher.focus();
      }
    });

    launcher = el(
      "button",
      "position:relative;width:56px;height:56px;border:0;border-radius:50%;cursor:pointer;box-shadow:0 4px 16px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;padding:0",
      { type: "button", "aria-controls": P + "panel", "aria-expanded": "false", "aria-label": cfg.title }
    );
    launcher.style.background = cfg.color;
    launcher.appendChild(icon());
    badge = el(
      "span",
      "display:none;position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 6px;box-sizing:border-box;border-radius:10px;background:#dc2626;color:#fff;font-size:12px;font-weight:700;line-height:20px;text-align:center",
      { "aria-hidden": "true" }
    );
    launcher.appendChild(badge);
    launcher.addEventListener("click", function () {
      setOpen(!open);
    });

    wrap.appendChild(panel);
    wrap.appendChild(launcher);
    document.body.appendChild(host);
  }

  function field(parent, key, text, type, autocomplete, max, value) {
    var label = el("label", "display:block;font-size:13px;color:#374151", { for: P + key });
    label.textContent = text;
    var input = el("input", FIELD, { id: P + key, type: type, autocomplete: autocomplete, maxlength: String(max) });
    input.value = value;
    input.addEventListener("input", function () {
      state[key] = input.value.trim();
      writeStore();
    });
    parent.appendChild(label);
    parent.appendChild(input);
    return input;
  }

  function icon() {
    var NS = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(NS, "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H10l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    path.setAttribute("fill", "#fff");
    svg.appendChild(path);
    return svg;
  }

  function bubble(entry) {
    var row = el("div", "display:flex;flex-direction:column;margin:6px 0;align-items:" + (entry.me ? "flex-end" : "flex-start"));
    var b = el("div", "max-width:80%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere");
    if (entry.me) {
      b.style.background = cfg.color;
      b.style.color = "#fff";
    } else {
      b.style.background = "#e5e7eb";
    }
    var who = el("span", HIDDEN);
    who.textContent = entry.me ? "You: " : "Support: ";
    b.appendChild(who);
    b.appendChild(document.createTextNode(entry.text));
    if (entry.at) b.title = new Date(entry.at).toLocaleString();
    var note = el("div", "font-size:12px;color:#6b7280;margin-top:2px");
    row.appendChild(b);
    row.appendChild(note);
    return { row: row, note: note, status: undefined };
  }

  function showStatus(view, entry) {
    view.status = entry.status;
    while (view.note.firstChild) view.note.removeChild(view.note.firstChild);
    if (entry.status === "sending") view.note.textContent = "Sending\u2026";
    if (entry.status === "failed") {
      view.note.appendChild(document.createTextNode("Not sent. "));
      var retry = el("button", "background:none;border:0;padding:0;color:#1d4ed8;text-decoration:underline;cursor:pointer;font:inherit", {
        type: "button",
      });
      retry.textContent = "Retry";
      retry.addEventListener("click", function () {
        deliver(entry.id);
      });
      view.note.appendChild(retry);
    }
  }

  /** Brings the DOM in line with the state: new entries are appended (so the live region reads
   * only them), statuses updated, trimmed entries removed. */
  function render() {
    var present = {};
    var added = false;
    state.log.forEach(function (entry) {
      present[entry.id] = true;
      var view = views.get(entry.id);
      if (!view) {
        view = bubble(entry);
        views.set(entry.id, view);
        logbox.appendChild(view.row);
        added = true;
      }
      if (view.status !== entry.status) showStatus(view, entry);
    });
    views.forEach(function (view, id) {
      if (!present[id]) {
        logbox.removeChild(view.row);
        views.delete(id);
      }
    });
    if (added) logbox.scrollTop = logbox.scrollHeight;
    details.style.display = cfg.ask_email && !state.started ? "block" : "none";
    var unread = open ? 0 : state.unread;
    badge.textContent = unread > 9 ? "9+" : String(unread);
    badge.style.display = unread ? "block" : "none";
    launcher.setAttribute("aria-label", unread ? cfg.title + " (" + unread + " new)" : cfg.title);
  }

  function setOpen(value) {
    open = value;
    panel.style.display = open ? "flex" : "none";
    launcher.setAttribute("aria-expanded", String(open));
    if (open) {
      state.unread = 0;
      writeStore();
      render();
      logbox.scrollTop = logbox.scrollHeight;
      (details.style.display === "none" ? input : nameInput).focus();
      schedule(0);
    } else {
      render();
      schedule();
    }
  }

  // Sending.
  function submit() {
    var text = input.value.trim();
    if (!text) return;
    if (byteLength(text) > MAX_TEXT_BYTES) return showError("That message is too long; please split it up.");
    if (cfg.ask_email && !state.started) {
      state.name = nameInput.value.trim();
      state.email = emailInput.value.trim();
      if (state.email && !/^[^\s@]+@[^\s@]+$/.test(state.email)) {
        emailInput.focus();
        return showError("Please check your e-mail address.");
      }
    }
    showError("");
    var entry = { id: randomId(), me: true, text: text, at: Date.now(), status: "sending" };
    state.log.push(entry);
    state.started = true;
    state.last = entry.at;
    writeStore();
    render();
    input.value = "";
    input.focus();
    deliver(entry.id);
  }

  function showError(message) {
    errorLine.textContent = message;
  }

  function setStatus(id, status) {
    var entry = findEntry(id);
    if (!entry) return;
    entry.status = status;
    writeStore();
    render();
  }

  /** Posts one of the visitor's messages. Its id is the client_id, fixed when it was typed, so
   * a retry (the button, or the next page load after leaving mid-send) is stored once. */
  function deliver(id) {
    var entry = findEntry(id);
    if (!entry) return;
    setStatus(id, "sending");
    var body = { session: state.session, client_id: entry.id, text: entry.text };
    if (cfg.ask_email && state.name) body.name = state.name;
    if (cfg.ask_email && state.email) body.email = state.email;
    fetch(base + "/messages", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    })
      .then(function (r) {
        setStatus(id, r.ok ? "sent" : "failed");
      })
      .catch(function () {
        setStatus(id, "failed");
      })
      .then(function () {
        schedule();
      });
  }

  // Receiving.
  var timer = null;
  var polling = false;
  var failures = 0;

  function interval() {
    if (open && !document.hidden) return OPEN_POLL_MS;
    return Date.now() - state.last < QUIET_AFTER_MS ? CLOSED_POLL_MS : QUIET_POLL_MS;
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = null;
    if (!state.started) return; // no message, no conversation, nothing to fetch
    if (delay === undefined) delay = Math.min(MAX_BACKOFF_MS, interval() * Math.pow(2, failures));
    timer = setTimeout(poll, delay);
  }

  function poll() {
    timer = null;
    if (polling) return; // the running poll schedules the next
    polling = true;
    var url = base + "/messages?session=" + encodeURIComponent(state.session) + "&after=" + state.after;
    fetch(url, { cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        failures = 0;
        receive(data && data.messages);
      })
      .catch(function () {
        failures = Math.min(failures + 1, 8);
      })
      .then(function () {
        polling = false;
        schedule();
      });
  }

  function receive(messages) {
    if (!Array.isArray(messages) || !messages.length) return;
    // Another tab may have stored some of these already.
    var stored = readStore();
    if (stored.session === state.session) state = stored;
    messages.sort(function (a, b) {
      return a.seq - b.seq;
    });
    var added = 0;
    messages.forEach(function (m) {
      if (!m || typeof m.seq !== "number" || typeof m.text !== "string" || m.seq <= state.after) return;
      state.log.push({ id: "r" + m.seq, me: false, text: m.text, at: typeof m.at === "number" ? m.at : Date.now() });
      state.after = m.seq;
      added++;
    });
    if (!added) return;
    state.last = Date.now();
    if (!open || document.hidden) state.unread += added;
    writeStore();
    render();
  }

  function start() {
    if (!document.body) {
      document.addEventListener("DOMContentLoaded", start);
      return;
    }
    build();
    render();
    // Messages still "sending" when the visitor left the last page go out again, stored once.
    state.log.forEach(function (entry) {
      if (entry.me && entry.status === "sending") deliver(entry.id);
    });
    schedule(0);
    document.addEventListener("visibilitychange", function () {
      schedule(open && !document.hidden ? 0 : undefined);
    });
    window.addEventListener("storage", function (e) {
      if (e.key !== STORE_KEY) return;
      state = readStore();
      render();
    });
  }

  start();
})();
