// End-to-end test of the webchat channel in a real browser: the real server, the widget embedded
// by a page of another origin (so CORS is exercised for real), a visitor's message that becomes a
// ticket, an agent's reply that shows up in the open widget, and a transcript that survives a
// reload. Run by tests/run.sh after `cargo test` has built target/debug/plugdesk:
//
//   npm ci --prefix tests/browser && node tests/browser/webchat.mjs
//
// PLUGDESK_BIN names another binary; CHROMIUM names another browser (default Debian's
// /usr/bin/chromium). Everything stays on 127.0.0.1. On failure the step, what was seen, the
// server's log and a screenshot are printed, and the scratch directory is kept for a look.

import { spawn, execFile } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = resolve(process.env.PLUGDESK_BIN || join(ROOT, "target/debug/plugdesk"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const TITLE = "Hilfe";
const VISITOR = { name: "Erika Mustermann", email: "erika@example.com" };
const QUESTION = "Wo ist mein Paket?";
const ANSWER = "Ihr Paket ist unterwegs.";
// The widget polls every 700 ms while open and the outbox ticks every 20 ms here, so a reply
// should show in well under a second; 3 s leaves room for a slow machine without hiding a
// widget that fell back to the 5 s closed-panel interval.
const REPLY_WITHIN_MS = 3000;
// Generous: the first request waits for the bundled plugins to compile in a debug build.
const SERVER_START_MS = 30_000;
const API_TIMEOUT_MS = 45_000;
const UI_TIMEOUT_MS = 10_000;

const PANEL = "#plugdesk-webchat-panel";
const LOG = `${PANEL} [role="log"]`;
const LAUNCHER = `button[aria-label="${TITLE}"]`;

/** A failure of one step, with what was seen. */
class Failure extends Error {}

let currentStep = "setting up";

function step(name) {
  currentStep = name;
  console.log(`--> ${name}`);
}

function fail(message) {
  throw new Failure(message);
}

/** Polls `probe` until it returns something truthy or the deadline passes; `seen` describes the
 * last state for the failure message. */
async function until(what, timeoutMs, probe, seen = () => "") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) fail(`${what} did not happen within ${timeoutMs} ms${await described(seen)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function described(seen) {
  try {
    const s = await seen();
    return s ? `; seen: ${s}` : "";
  } catch (e) {
    return `; (could not describe the state: ${e.message})`;
  }
}

// The server.

/** Starts `plugdesk serve` on a free port of 127.0.0.1 in `ctx.dir`, its working directory, where
 * plugdesk.toml is read from. `ctx.server` is set as soon as the process runs, so it is stopped
 * even when it never comes up. */
async function startServer(ctx) {
  const dir = ctx.dir;
  const env = { ...process.env, PLUGDESK_LOG: "warn", PLUGDESK_LOG_FORMAT: "text" };
  // SQLite in `dir`, whatever the caller's shell points at.
  for (const k of ["DATABASE_URL", "PLUGDESK_DATA", "PLUGDESK_LISTEN"]) delete env[k];

  if (!existsSync(BIN)) fail(`no server binary at ${BIN}: run \`cargo build\` or set PLUGDESK_BIN`);
  const data = join(dir, "data");
  const init = await promisify(execFile)(BIN, ["init", "--data", data], { cwd: dir, env }).catch((e) =>
    fail(`\`${BIN} init\` failed (${e.code ?? e.signal}): ${e.stderr || e.message}`),
  );
  const token = init.stdout.trim().split("\n").pop().trim();
  if (!/^pd_\w+$/.test(token)) fail(`\`plugdesk init\` printed no token as its last line: ${JSON.stringify(init.stdout)}`);

  // Replies leave the outbox at once instead of on the default 500 ms tick.
  writeFileSync(join(dir, "plugdesk.toml"), "[outbox]\ntick_ms = 20\n");
  const logPath = join(dir, "server.log");
  const child = spawn(BIN, ["serve", "--data", data, "--listen", "127.0.0.1:0"], {
    cwd: dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server = (ctx.server = { child, token, logPath, log: "", exited: null });
  const record = (chunk) => {
    server.log += chunk;
    appendFileSync(logPath, chunk);
  };
  child.stderr.setEncoding("utf8").on("data", record);
  child.stdout.setEncoding("utf8");
  const exited = new Promise((r) => child.on("exit", (code, signal) => r((server.exited = { code, signal }))));
  server.stop = async () => {
    if (server.exited || child.exitCode !== null || child.pid === undefined) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };

  server.base = await new Promise((resolveBase, rejectBase) => {
    let out = "";
    const timer = setTimeout(
      () => rejectBase(new Failure(`the server printed no "listening on" line within ${SERVER_START_MS} ms`)),
      SERVER_START_MS,
    );
    child.stdout.on("data", (chunk) => {
      record(chunk);
      out += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+) \(database: /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveBase(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rejectBase(new Failure(`the server exited (code ${code}, signal ${signal}) before listening`));
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      rejectBase(new Failure(`cannot start ${BIN}: ${e.message}`));
    });
  });
  return server;
}

/** Calls the API with the admin token; fails the step unless the status is `expect`. */
async function api(server, method, path, body, expect = 200) {
  let response;
  try {
    response = await fetch(server.base + path, {
      method,
      headers: { authorization: `Bearer ${server.token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch (e) {
    fail(`${method} ${path}: ${e.message}`);
  }
  const text = await response.text();
  if (response.status !== expect) fail(`${method} ${path} answered ${response.status}, expected ${expect}: ${text}`);
  return JSON.parse(text);
}

// The third-party site.

/** Serves one page that embeds the widget, from an origin other than the helpdesk's. */
async function startSite(widgetUrl) {
  const html = `<!doctype html>
<html lang="de">
<head><meta charset="utf-8"><title>Beispiel-Shop</title></head>
<body>
<h1>Beispiel-Shop</h1>
<p>Eine Seite eines Kunden, die den Chat mit einem Script-Tag einbindet.</p>
<script src="${widgetUrl}" async></script>
</body>
</html>
`;
  const site = createServer((req, res) => {
    if (req.url === "/" || req.url === "/index.html") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      res.end(html);
    } else if (req.url === "/favicon.ico") {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    }
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  return { server: site, url: `http://127.0.0.1:${site.address().port}/` };
}

// The test.

async function run(ctx) {
  step("starting the server");
  const server = await startServer(ctx);
  console.log(`    ${server.base}`);

  step("installing the webchat channel");
  const channel = await api(
    server,
    "POST",
    "/api/v1/channels",
    { plugin: "webchat", grants: ["kv"], settings: { title: TITLE, ask_email: true } },
    201,
  );
  if (typeof channel.id !== "number") fail(`the new channel has no id: ${JSON.stringify(channel)}`);
  const widgetUrl = `${server.base}/hooks/${channel.id}/widget.js`;

  step("serving a third-party page that embeds the widget");
  const site = (ctx.site = await startSite(widgetUrl));
  if (new URL(site.url).origin === server.base) fail("the page and the helpdesk share an origin");
  console.log(`    ${site.url} embeds ${widgetUrl}`);

  step("launching Chromium");
  ctx.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const context = await ctx.browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = (ctx.page = await context.newPage());
  page.on("console", (m) => {
    if (["error", "warning"].includes(m.type())) ctx.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => ctx.console.push(`uncaught: ${e.message}`));
  page.on("requestfailed", (r) => {
    ctx.console.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.protocol.startsWith("http") && url.hostname !== "127.0.0.1") ctx.foreign.push(r.url());
  });

  step("opening the page and the widget");
  await page.goto(site.url);
  const launcher = page.locator(LAUNCHER);
  await launcher.waitFor({ state: "visible", timeout: UI_TIMEOUT_MS }).catch(() =>
    fail(`no button labelled "${TITLE}" appeared (is the widget script loaded, and its title setting applied?)`),
  );
  const inShadow = await launcher.evaluate((b) => b.getRootNode() instanceof ShadowRoot);
  if (!inShadow) fail("the launcher is not inside the widget's shadow root");
  await launcher.click();
  await page.locator(PANEL).waitFor({ state: "visible", timeout: UI_TIMEOUT_MS });
  const heading = await page.locator(`${PANEL} h2`).textContent();
  if (heading !== TITLE) fail(`the panel's heading is ${JSON.stringify(heading)}, expected ${JSON.stringify(TITLE)}`);

  step("writing a message as a visitor");
  const name = page.getByLabel("Your name");
  const email = page.getByLabel(/^Your e-mail/);
  // ask_email is on, so the panel must ask before the first message.
  if (!(await name.isVisible()) || !(await email.isVisible())) {
    fail("the panel does not ask for a name and e-mail, though ask_email is true");
  }
  await name.fill(VISITOR.name);
  await email.fill(VISITOR.email);
  const input = page.getByLabel("Message", { exact: true });
  await input.fill(QUESTION);
  await input.press("Enter");
  const log = page.locator(LOG);
  await until(
    "the visitor's message shown as sent",
    UI_TIMEOUT_MS,
    async () => {
      const text = await log.innerText();
      return text.includes(QUESTION) && !text.includes("Sending") && !text.includes("Not sent");
    },
    () => log.innerText().then((t) => JSON.stringify(t)),
  );
  if ((await input.inputValue()) !== "") fail("the message box was not cleared after sending");
  if (await name.isVisible()) fail("the name field is still shown after the first message");

  step("finding the ticket through the API");
  const tickets = await until(
    "a webchat ticket",
    UI_TIMEOUT_MS,
    async () => {
      const list = await api(server, "GET", "/api/v1/tickets?channel=webchat");
      return list.items?.length ? list.items : null;
    },
    async () => JSON.stringify(await api(server, "GET", "/api/v1/tickets")),
  );
  if (tickets.length !== 1) fail(`expected one webchat ticket, found ${tickets.length}: ${JSON.stringify(tickets)}`);
  const ticket = tickets[0];
  if (ticket.channel !== "webchat") fail(`the ticket's channel is not webchat: ${JSON.stringify(ticket)}`);
  const messages = (await api(server, "GET", `/api/v1/tickets/${ticket.id}/messages`)).items;
  const inbound = messages.filter((m) => m.body === QUESTION);
  if (inbound.length !== 1) {
    fail(`expected the message ${JSON.stringify(QUESTION)} once on ticket ${ticket.id}: ${JSON.stringify(messages)}`);
  }
  const customer = await api(server, "GET", `/api/v1/customers/${ticket.customer_id}`);
  if (customer.name !== VISITOR.name) fail(`the customer is not ${VISITOR.name}: ${JSON.stringify(customer)}`);

  step("replying as an agent");
  // The moment the reply reaches the widget's DOM, noted in the page by a MutationObserver:
  // Playwright's own waiting re-checks at growing intervals (up to 500 ms), too coarse to time.
  await log.evaluate((box, [text, timeoutMs]) => {
    box.plugdeskTestShown = new Promise((resolveShown) => {
      const seen = () => box.textContent.includes(text);
      const observer = new MutationObserver(() => {
        if (seen()) {
          observer.disconnect();
          resolveShown(Date.now());
        }
      });
      observer.observe(box, { childList: true, subtree: true, characterData: true });
      setTimeout(() => {
        observer.disconnect();
        resolveShown(null);
      }, timeoutMs);
      if (seen()) resolveShown(Date.now());
    });
  }, [ANSWER, REPLY_WITHIN_MS]);
  const posted = Date.now();
  const reply = await api(server, "POST", `/api/v1/tickets/${ticket.id}/reply`, { body: ANSWER }, 201);
  const shownAt = await log.evaluate((box) => box.plugdeskTestShown);
  // Not exact: a bubble reads "Support: " (for screen readers) before the text.
  const answer = log.getByText(ANSWER).first();
  if (shownAt === null || !(await answer.isVisible())) {
    const all = (await api(server, "GET", `/api/v1/tickets/${ticket.id}/messages`)).items;
    const sent = all.find((m) => m.id === reply.id);
    fail(
      `the reply did not show in the open widget within ${REPLY_WITHIN_MS} ms; ` +
        `its delivery: ${JSON.stringify({ status: sent?.delivery_status, error: sent?.delivery_error })}; ` +
        `the widget shows ${JSON.stringify(await log.innerText())}`,
    );
  }
  ctx.latency = shownAt - posted;
  console.log(`    the reply showed in the widget ${ctx.latency} ms after it was posted`);

  step("reloading the page: the transcript stays");
  await page.reload();
  await launcher.waitFor({ state: "visible", timeout: UI_TIMEOUT_MS });
  // Opening the panel asks for replies at once; after that answer the transcript is settled, so
  // a reply shown twice would show here.
  const polled = page.waitForResponse((r) => r.url().startsWith(`${server.base}/hooks/${channel.id}/messages?`), {
    timeout: UI_TIMEOUT_MS,
  });
  await launcher.click();
  await page.locator(PANEL).waitFor({ state: "visible", timeout: UI_TIMEOUT_MS });
  const poll = await polled;
  if (!poll.ok()) fail(`polling for replies after the reload answered ${poll.status()}: ${await poll.text()}`);
  const transcript = await log.innerText();
  const asked = transcript.indexOf(QUESTION);
  const answered = transcript.indexOf(ANSWER);
  if (asked < 0 || answered < 0 || answered < asked) {
    fail(`after the reload the widget shows ${JSON.stringify(transcript)}, expected the question and then the answer`);
  }
  if (transcript.split(ANSWER).length !== 2) {
    fail(`after the reload the answer is shown more than once: ${JSON.stringify(transcript)}`);
  }
  if (await name.isVisible()) fail("after the reload the panel asks for the name again");

  if (ctx.foreign.length) fail(`the page made requests beyond 127.0.0.1: ${ctx.foreign.join(", ")}`);
}

async function main() {
  const ctx = { dir: mkdtempSync(join(tmpdir(), "plugdesk-webchat-")), console: [], foreign: [] };
  const started = Date.now();
  let failed = null;
  const stop = async (signal) => {
    console.error(`\ninterrupted (${signal}); stopping`);
    await cleanup(ctx, true);
    process.exit(130);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    await run(ctx);
  } catch (e) {
    failed = e;
  }
  if (failed) {
    console.error(`\nFAILED at step "${currentStep}":`);
    console.error(`  ${failed instanceof Failure ? failed.message : failed.stack || failed}`);
    if (ctx.page) {
      const shot = join(ctx.dir, "failure.png");
      try {
        await ctx.page.screenshot({ path: shot, fullPage: true, timeout: 5000 });
        console.error(`  screenshot: ${shot}`);
      } catch (e) {
        console.error(`  (no screenshot: ${e.message})`);
      }
    }
    if (ctx.console.length) console.error(`  the page said:\n    ${ctx.console.join("\n    ")}`);
    if (ctx.foreign.length) console.error(`  requests beyond 127.0.0.1:\n    ${ctx.foreign.join("\n    ")}`);
    if (ctx.server?.log.trim()) {
      const tail = ctx.server.log.trim().split("\n").slice(-30).join("\n    ");
      console.error(`  the server's output (last lines; all of it in ${ctx.server.logPath}):\n    ${tail}`);
    }
  }
  // Keep what there is to look at after a failure: the screenshot, the server's log and database.
  const keep = failed && (ctx.page || ctx.server);
  await cleanup(ctx, !keep);
  if (keep) console.error(`  kept for a look: ${ctx.dir}`);
  if (failed) process.exit(1);
  console.log(`webchat in a browser: ok in ${((Date.now() - started) / 1000).toFixed(1)} s (reply latency ${ctx.latency} ms)`);
}

/** Closes the browser, the page's server and the helpdesk; removes the scratch directory unless
 * it is kept for a look after a failure. */
async function cleanup(ctx, remove) {
  await ctx.browser?.close().catch((e) => console.error(`closing the browser: ${e.message}`));
  ctx.browser = null;
  ctx.site?.server.closeAllConnections?.();
  await new Promise((r) => (ctx.site ? ctx.site.server.close(r) : r()));
  ctx.site = null;
  await ctx.server?.stop().catch((e) => console.error(`stopping the server: ${e.message}`));
  if (remove) rmSync(ctx.dir, { recursive: true, force: true });
}

await main();
