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

import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";

// The shared harness, by what it is for: steps, the server, the browser, the whole run.
import {
  fail, note, step, until,
  BIN, SERVER_START_MS, api, checkBinary, dataDir, listeningOn, serverEnv, startServer,
  UI_TIMEOUT_MS, failureScreenshot, launchBrowser, watchPage,
  runTest, testContext,
} from "./harness.mjs";

const TITLE = "Hilfe";
const VISITOR = { name: "Erika Mustermann", email: "erika@example.com" };
const QUESTION = "Wo ist mein Paket?";
const ANSWER = "Ihr Paket ist unterwegs.";
// The widget polls every 700 ms while open and the outbox ticks every 20 ms here, so a reply
// should show in well under a second; 3 s leaves room for a slow machine without hiding a
// widget that fell back to the 5 s closed-panel interval.
const REPLY_WITHIN_MS = 3000;

const PANEL = "#plugdesk-webchat-panel";
const LOG = `${PANEL} [role="log"]`;
const LAUNCHER = `button[aria-label="${TITLE}"]`;

// The server.

/** Creates the data directory with `plugdesk init`, which prints the admin's API token, then
 * starts the server on it (see startServer). */
async function startHelpdesk(ctx) {
  const env = serverEnv();
  checkBinary();
  const init = await promisify(execFile)(BIN, ["init", "--data", dataDir(ctx)], { cwd: ctx.dir, env }).catch((e) =>
    fail(`\`${BIN} init\` failed (${e.code ?? e.signal}): ${e.stderr || e.message}`),
  );
  const token = init.stdout.trim().split("\n").pop().trim();
  if (!/^pd_\w+$/.test(token)) fail(`\`plugdesk init\` printed no token as its last line: ${JSON.stringify(init.stdout)}`);

  const base = await startServer(ctx, {
    env,
    ready: listeningOn,
    timedOut: () => `the server printed no "listening on" line within ${SERVER_START_MS} ms`,
    before: "listening",
  });
  return Object.assign(ctx.server, { base, token });
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
  const server = await startHelpdesk(ctx);
  note(server.base);

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
  note(`${site.url} embeds ${widgetUrl}`);

  step("launching Chromium");
  const browser = await launchBrowser(ctx);
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = (ctx.page = await context.newPage());
  watchPage(ctx, page);

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
  note(`the reply showed in the widget ${ctx.latency} ms after it was posted`);

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

await runTest(testContext("webchat"), {
  name: "webchat in a browser",
  run,
  screenshots: async (ctx) => {
    if (!ctx.page) return;
    const shot = join(ctx.dir, "failure.png");
    const error = await failureScreenshot(ctx.page, shot);
    console.error(error ? `  (no screenshot: ${error})` : `  screenshot: ${shot}`);
  },
  pagesSaid: "the page said",
  // The page's server, before the helpdesk.
  close: async (ctx) => {
    ctx.site?.server.closeAllConnections?.();
    await new Promise((r) => (ctx.site ? ctx.site.server.close(r) : r()));
    ctx.site = null;
  },
  okNote: (ctx) => `reply latency ${ctx.latency} ms`,
});
