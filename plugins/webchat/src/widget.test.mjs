// Logic tests of widget.js without a browser: the script runs in a Node `vm` context against a
// small fake DOM, fake timers, a fake fetch and a fake localStorage. Run with
//   node --test webchat/src/widget.test.mjs
// The fake DOM throws on innerHTML/outerHTML/insertAdjacentHTML, so a test passes only if the
// widget never parses markup.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";
import { webcrypto } from "node:crypto";

const SOURCE = readFileSync(new URL("./widget.js", import.meta.url), "utf8");
const SLOT = "/*@config*/null";
const SERVER_ID = /^[A-Za-z0-9-]{8,64}$/;

class Node {
  constructor(tag) {
    this.tagName = tag;
    this.childNodes = [];
    this.parentNode = null;
    this.attributes = {};
    this.listeners = {};
    this.value = "";
    this.scrollTop = 0;
    this.scrollHeight = 100;
    const style = {};
    Object.defineProperty(style, "cssText", {
      set(v) {
        style._css = v;
        for (const decl of v.split(";")) {
          const i = decl.indexOf(":");
          if (i > 0) style[decl.slice(0, i).trim().replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = decl.slice(i + 1).trim();
        }
      },
      get() {
        return style._css;
      },
    });
    this.style = style;
  }
  get firstChild() {
    return this.childNodes[0] || null;
  }
  appendChild(c) {
    if (c.parentNode) c.parentNode.removeChild(c);
    c.parentNode = this;
    this.childNodes.push(c);
    return c;
  }
  removeChild(c) {
    const i = this.childNodes.indexOf(c);
    if (i < 0) throw new Error("not a child");
    this.childNodes.splice(i, 1);
    c.parentNode = null;
    return c;
  }
  setAttribute(k, v) {
    this.attributes[k] = String(v);
    if (k === "id") this.id = String(v);
  }
  getAttribute(k) {
    return k in this.attributes ? this.attributes[k] : null;
  }
  addEventListener(type, fn) {
    (this.listeners[type] = this.listeners[type] || []).push(fn);
  }
  dispatch(type, extra = {}) {
    const event = { type, target: this, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; }, ...extra };
    for (let n = this; n; n = n.parentNode || n.host) for (const fn of n.listeners[type] || []) fn(event);
    return event;
  }
  click() {
    this.dispatch("click");
    if (this.tagName === "button" && this.attributes.type === "submit") {
      let form = this.parentNode;
      while (form && form.tagName !== "form") form = form.parentNode;
      if (form) form.dispatch("submit");
    }
  }
  focus() {
    this.ownerDocument.activeElement = this;
  }
  attachShadow() {
    this.shadowRoot = new Node("#shadow");
    this.shadowRoot.host = this;
    return this.shadowRoot;
  }
  get textContent() {
    if (this.tagName === "#text") return this.data;
    return this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(v) {
    for (const c of this.childNodes) c.parentNode = null;
    this.childNodes = [];
    if (v !== "") this.appendChild(textNode(String(v)));
  }
  set innerHTML(_) {
    throw new Error("innerHTML used");
  }
  set outerHTML(_) {
    throw new Error("outerHTML used");
  }
  insertAdjacentHTML() {
    throw new Error("insertAdjacentHTML used");
  }
  // Helpers for the tests.
  *all() {
    for (const c of this.childNodes) {
      yield c;
      yield* c.all();
    }
    if (this.shadowRoot) yield* this.shadowRoot.all();
  }
  find(pred) {
    for (const n of this.all()) if (pred(n)) return n;
    return null;
  }
}

function textNode(data) {
  const n = new Node("#text");
  n.data = data;
  return n;
}

/** A page with the widget's script tag, sharing `storage` with earlier pages of the site. */
function page({ config = null, storage = new Map(), crypto = webcrypto, src = "https://help.example.com/hooks/42/widget.js" } = {}) {
  const document = new Node("#document");
  const body = document.appendChild(new Node("body"));
  document.body = body;
  document.hidden = false;
  document.currentScript = { src };
  document.createElement = (tag) => Object.assign(new Node(tag), { ownerDocument: document });
  document.createElementNS = (_, tag) => Object.assign(new Node(tag), { ownerDocument: document });
  document.createTextNode = textNode;

  let now = 1_700_000_000_000;
  const timers = new Map();
  let nextTimer = 1;
  const fetches = [];
  const window = {
    crypto,
    localStorage: {
      getItem: (k) => (storage.has(k) ? storage.get(k) : null),
      setItem: (k, v) => storage.set(k, String(v)),
    },
    listeners: {},
    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    },
  };
  class FakeDate extends Date {
    constructor(...a) {
      super(...(a.length ? a : [now]));
    }
    static now() {
      return now;
    }
  }
  const context = {
    window,
    document,
    Date: FakeDate,
    TextEncoder,
    Uint8Array,
    Map,
    setTimeout: (fn, ms) => {
      const id = nextTimer++;
      timers.set(id, { fn, at: now + ms, ms });
      return id;
    },
    clearTimeout: (id) => timers.delete(id),
    fetch: (url, init = {}) =>
      new Promise((resolve, reject) => {
        fetches.push({ url, init, resolve, reject });
      }),
  };
  vm.createContext(context);
  vm.runInContext(SOURCE.replace(SLOT, JSON.stringify(config)), context);

  const root = body.childNodes[0]?.shadowRoot;
  const q = (pred) => root.find(pred);
  return {
    document,
    window,
    storage,
    fetches,
    root,
    launcher: q((n) => n.tagName === "button" && n.getAttribute("aria-controls")),
    panel: q((n) => n.getAttribute("role") === "dialog"),
    log: q((n) => n.getAttribute("role") === "log"),
    input: q((n) => n.tagName === "textarea"),
    field: (id) => q((n) => n.id === "plugdesk-webchat-" + id),
    find: q,
    timers: () => [...timers.values()].map((t) => t.ms),
    /** Moves the clock, running due timers in order. */
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
        await flush();
      }
      now = end;
    },
    type(text) {
      this.input.value = text;
      return this.input.dispatch("keydown", { key: "Enter", shiftKey: false, isComposing: false, keyCode: 13 });
    },
    bubbles() {
      return this.log.childNodes.map((row) => row.childNodes[0].textContent);
    },
  };
}

const flush = () => new Promise((r) => setImmediate(r));
const ok = (json) => ({ ok: true, status: 200, json: async () => json });

test("the script has exactly one config slot and parses", () => {
  assert.equal(SOURCE.split(SLOT).length, 2);
  new vm.Script(SOURCE);
});

test("builds an accessible launcher and panel from the settings, as text", async () => {
  const evil = '</script><img src=x onerror="alert(1)">';
  const p = page({ config: { title: evil, greeting: "Hello <b>you</b>", color: "#0f766e", ask_email: true } });
  assert.equal(p.launcher.getAttribute("aria-label"), evil);
  assert.equal(p.launcher.getAttribute("aria-expanded"), "false");
  assert.equal(p.launcher.style.background, "#0f766e");
  assert.equal(p.panel.style.display, "none");
  assert.equal(p.find((n) => n.tagName === "h2").textContent, evil);
  assert.equal(p.bubbles()[0], "Support: Hello <b>you</b>");
  // Every input has a label.
  for (const input of p.root.all()) {
    if (input.tagName !== "input" && input.tagName !== "textarea") continue;
    assert.ok(p.find((n) => n.tagName === "label" && n.getAttribute("for") === input.id), input.id);
  }
  p.launcher.click();
  assert.equal(p.panel.style.display, "flex");
  assert.equal(p.launcher.getAttribute("aria-expanded"), "true");
  p.panel.dispatch("keydown", { key: "Escape" });
  assert.equal(p.panel.style.display, "none");
  assert.equal(p.document.activeElement, p.launcher);
});

test("a bad colour from the server falls back to the default", () => {
  const p = page({ config: { title: "T", greeting: "", color: "red;background:url(x)", ask_email: false } });
  assert.equal(p.launcher.style.background, "#2563eb");
});

test("no polling before the visitor's first message", async () => {
  const p = page();
  p.launcher.click();
  await p.advance(60_000);
  assert.equal(p.fetches.length, 0);
});

test("sends, shows the message at once, then polls every 700 ms while open and 5 s when closed", async () => {
  const p = page({ config: { title: "T", greeting: "", color: "#abc", ask_email: true } });
  p.launcher.click();
  p.field("name").value = " Ann ";
  p.field("email").value = "ann@example.com";
  const enter = p.type("  Hello there  ");
  assert.ok(enter.defaultPrevented);
  assert.deepEqual(p.bubbles(), ["You: Hello there"]);
  assert.equal(p.input.value, "");
  assert.equal(p.fetches.length, 1);
  const post = p.fetches[0];
  assert.equal(post.url, "https://help.example.com/hooks/42/messages");
  assert.equal(post.init.method, "POST");
  assert.equal(post.init.headers["content-type"], "application/json");
  const body = JSON.parse(post.init.body);
  assert.deepEqual(Object.keys(body).sort(), ["client_id", "email", "name", "session", "text"]);
  assert.match(body.session, SERVER_ID);
  assert.match(body.client_id, SERVER_ID);
  assert.deepEqual([body.text, body.name, body.email], ["Hello there", "Ann", "ann@example.com"]);
  assert.equal(p.log.childNodes[0].childNodes[1].textContent, "Sending\u2026");
  // The name and e-mail fields go once the chat has started.
  assert.equal(p.field("name").parentNode.style.display, "none");

  post.resolve(ok({ accepted: 1 }));
  await flush();
  assert.equal(p.log.childNodes[0].childNodes[1].textContent, "");
  assert.ok(p.timers().includes(700), `timers: ${p.timers()}`);
  await p.advance(700);
  const get = p.fetches[1];
  assert.equal(get.url, `https://help.example.com/hooks/42/messages?session=${body.session}&after=0`);
  assert.equal(get.init.method, undefined);
  get.resolve(ok({ messages: [{ seq: 7, text: '<img src=x onerror="alert(1)">', at: 1 }] }));
  await flush();
  assert.deepEqual(p.bubbles(), ["You: Hello there", 'Support: <img src=x onerror="alert(1)">']);
  await p.advance(700);
  assert.match(p.fetches[2].url, /&after=7$/);
  p.fetches[2].resolve(ok({ messages: [{ seq: 7, text: "duplicate", at: 1 }] }));
  await flush();
  assert.equal(p.bubbles().length, 2, "a reply already shown is not shown again");

  // Closed: polls every 5 s and counts unread replies on a badge.
  p.launcher.click();
  assert.deepEqual(p.timers(), [5000]);
  await p.advance(5000);
  p.fetches[3].resolve(ok({ messages: [{ seq: 9, text: "Are you there?", at: 2 }, { seq: 8, text: "Hello!", at: 2 }] }));
  await flush();
  const badge = p.launcher.childNodes[1];
  assert.equal(badge.textContent, "2");
  assert.equal(badge.style.display, "block");
  assert.equal(p.launcher.getAttribute("aria-label"), "T (2 new)");
  assert.deepEqual(p.bubbles().slice(2), ["Support: Hello!", "Support: Are you there?"]);
  p.launcher.click();
  assert.equal(badge.style.display, "none");
  assert.equal(p.launcher.getAttribute("aria-label"), "T");
});

test("each message gets a fresh client_id; a retry reuses it", async () => {
  const p = page({ config: { title: "T", greeting: "", color: "#abc", ask_email: false } });
  p.launcher.click();
  p.type("first");
  p.fetches[0].reject(new TypeError("network down"));
  await flush();
  const note = p.log.childNodes[0].childNodes[1];
  assert.equal(note.textContent, "Not sent. Retry");
  note.childNodes[1].click();
  const first = JSON.parse(p.fetches[0].init.body);
  const retried = p.fetches.filter((f) => f.init.method === "POST")[1];
  assert.equal(JSON.parse(retried.init.body).client_id, first.client_id);
  assert.ok(!("name" in first) && !("email" in first), "ask_email off: no name or e-mail");
  retried.resolve(ok({ accepted: 1 }));
  await flush();
  p.type("second");
  const posts = p.fetches.filter((f) => f.init.method === "POST").map((f) => JSON.parse(f.init.body));
  assert.notEqual(posts[2].client_id, first.client_id);
  assert.equal(posts[2].session, first.session);
});

test("Shift+Enter does not send, nor Enter while composing", () => {
  const p = page();
  p.launcher.click();
  p.input.value = "hi";
  p.input.dispatch("keydown", { key: "Enter", shiftKey: true, keyCode: 13 });
  p.input.dispatch("keydown", { key: "Enter", shiftKey: false, isComposing: true, keyCode: 229 });
  assert.equal(p.fetches.length, 0);
});

test("a bad e-mail address or an over-long message is not sent", () => {
  const p = page();
  p.launcher.click();
  p.field("email").value = "ann.example.com";
  p.type("hi");
  assert.equal(p.fetches.length, 0);
  assert.equal(p.find((n) => n.getAttribute("role") === "alert").textContent, "Please check your e-mail address.");
  p.field("email").value = "";
  p.type("\u00e9".repeat(4097)); // 8194 bytes
  assert.equal(p.fetches.length, 0);
  p.type("\u00e9".repeat(4096));
  assert.equal(p.fetches.length, 1);
});

test("the chat survives a page load: same session, transcript, cursor; a message left mid-send goes again", async () => {
  const storage = new Map();
  const a = page({ storage });
  a.launcher.click();
  a.type("before leaving");
  a.fetches[0].resolve(ok({ accepted: 1 }));
  await flush();
  await a.advance(700);
  a.fetches[1].resolve(ok({ messages: [{ seq: 3, text: "reply", at: 5 }] }));
  await flush();
  a.type("left mid-send"); // never answered
  const sent = a.fetches.filter((f) => f.init.method === "POST").map((f) => JSON.parse(f.init.body));

  const b = page({ storage });
  assert.deepEqual(b.bubbles(), ["You: before leaving", "Support: reply", "You: left mid-send"]);
  const again = JSON.parse(b.fetches.find((f) => f.init.method === "POST").init.body);
  assert.equal(again.client_id, sent[1].client_id);
  assert.equal(again.session, sent[0].session);
  await b.advance(0);
  assert.match(b.fetches.find((f) => !f.init.method).url, /&after=3$/);
});

test("two tags for the same channel make one widget", () => {
  const storage = new Map();
  const p = page({ storage });
  const context = vm.createContext({ window: p.window, document: p.document });
  vm.runInContext(SOURCE, context);
  assert.equal(p.document.body.childNodes.length, 1);
});

test("session ids fit the server's rule with and without crypto.randomUUID", () => {
  for (const crypto of [webcrypto, { getRandomValues: (a) => webcrypto.getRandomValues(a) }, undefined]) {
    const p = page({ crypto });
    p.launcher.click();
    p.type("hi");
    const body = JSON.parse(p.fetches[0].init.body);
    assert.match(body.session, SERVER_ID);
    assert.match(body.client_id, SERVER_ID);
  }
});

test("the base URL comes from the script's own src", () => {
  const p = page({ src: "https://desk.example.org/support/hooks/7/widget.js?v=3" });
  p.launcher.click();
  p.type("hi");
  assert.equal(p.fetches[0].url, "https://desk.example.org/support/hooks/7/messages");
});
