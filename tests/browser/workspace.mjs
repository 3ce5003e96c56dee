// End-to-end test of the agent workspace (the web pages of core/web) in a real browser: the real
// server on a fresh database, the admin's first sign-in through the setup link, an invited agent,
// a ticket from the web form that arrives live in the open inbox (and whose script-laden text
// stays text), presence, a text module and a reply sent once, keyboard shortcuts, both
// languages, CSRF and the sign-in throttle, an admin page refused to an agent, axe-core on the
// main pages, screenshots, and signing out everywhere. The selectors come from the pages'
// contract (routes, ids and classes) only. Run by tests/run.sh after `cargo test` has built
// target/debug/plugdesk:
//
//   npm ci --prefix tests/browser && node tests/browser/workspace.mjs
//
// PLUGDESK_BIN names another binary; CHROMIUM names another browser (default Debian's
// /usr/bin/chromium). Everything stays on 127.0.0.1. Screenshots of the main pages are written to
// target/screenshots/. On failure the step, what was seen, the server's log and a screenshot of
// every open page are printed, and the scratch directory is kept for a look.

import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, dirname } from "node:path";

// The shared harness, by what it is for: steps, the server, the browser, the whole run.
import {
  described, fail, note, setStep, step, stepName, until,
  ROOT, API_TIMEOUT_MS, SERVER_START_MS, api, listeningOn, serverEnv, startServer,
  UI_TIMEOUT_MS, failureScreenshot, launchBrowser, watchPage,
  runTest, testContext,
} from "./harness.mjs";

const SCREENSHOTS = join(ROOT, "target/screenshots");

// Timeouts, and why they are what they are (the shared ones are in harness.mjs).
// The promise of the live pages: a new ticket shows in an open inbox, and another agent's
// presence on an open ticket page, within 3 s (server-sent events, no reload, no polling).
const LIVE_WITHIN_MS = 3_000;
// After a double-clicked "send", how long the server's answer to a second, abandoned request may
// still arrive: the message count is watched that long and must stay at one.
const DUPLICATE_SETTLE_MS = 1_500;

const ADMIN = { name: "Administrator", password: "Erste-Anmeldung-Admin-7391!" };
const ANNA = { name: "Anna Agent", email: "anna@example.com", password: "Annas-sicheres-Passwort-2468!" };
const CUSTOMER = { name: "Erika Mustermann", email: "erika@example.com" };
const MARKER = `Marker-${process.pid}-${Date.now().toString(36)}`;
// No words of the default playbooks (lost parcel, returns) in the subject or text.
const SUBJECT = `Frage zur Rechnung ${MARKER}`;
const XSS = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`;
const CUSTOMER_TEXT = `Guten Tag, ${MARKER}\n${XSS}\nbitte um Rückmeldung.`;
const KEYBOARD_SUBJECT = `Zweite Anfrage ${MARKER}`;
const REPLY_LINE = `Antwort von Anna ${MARKER}`;
const REPLY_TWICE = `Doppelklick ${MARKER}`;
const REPLY_REPLAYED = `Gleiche request_id ${MARKER}`;
const CSRF_TEXT = `Von fremder Seite ${MARKER}`;
const EVIL_ORIGIN = "http://evil.example";
// A text module to look for: the first purpose of the bundled templates (templates/{purpose}.…).
const MODULE_QUERY = readdirSync(join(ROOT, "templates"))
  .filter((f) => f.endsWith(".hbs"))
  .map((f) => f.split(".")[0])
  .sort()[0];

/** A check that failed where the rest of the run can still go on: reported with its step at the
 * end, and the run fails. */
function deviation(ctx, message) {
  ctx.deviations.push(`${stepName()}: ${message}`);
  console.log(`    FAILED (the run goes on): ${message}`);
}

/** Waits for `selector` on `page`; fails with `why` and the page's address and main text. */
async function expectSelector(page, selector, why, { timeout = UI_TIMEOUT_MS, state = "attached" } = {}) {
  try {
    return await page.waitForSelector(selector, { timeout, state });
  } catch {
    fail(`${why}: no \`${selector}\` (${state}) within ${timeout} ms on ${page.url()}${await described(() => pageText(page))}`);
  }
}

/** The start of a page's visible text, for failure messages. */
async function pageText(page) {
  const text = await page.evaluate(() => document.body?.innerText ?? "").catch(() => "");
  return JSON.stringify(text.replace(/\s+/g, " ").slice(0, 600));
}

// The server.

/** Starts the server on a fresh data directory (see startServer). On this first start it
 * creates the `default` workspace and prints the admin's API token and one-time setup link. */
async function startHelpdesk(ctx) {
  // The address, the API token and the setup link, in whatever order they are printed.
  const found = await startServer(ctx, {
    env: serverEnv(["PLUGDESK_SECRET_KEY"]),
    ready: (out) => {
      const base = listeningOn(out);
      const lines = out.split("\n");
      // A whole line only: the setup link's line may be printed before the token's.
      const complete = lines.slice(0, -1);
      const token = complete
        .filter((l) => !l.includes("/setup/"))
        .map((l) => /(?:^|\s)(pd_\w+)\s*$/.exec(l)?.[1])
        .find(Boolean);
      const setupLine = complete.find((l) => l.includes("/setup/"));
      const setup = setupLine && (/https?:\/\/\S+\/setup\/\S+/.exec(setupLine)?.[0] ?? /\/setup\/\S+/.exec(setupLine)?.[0]);
      return base && token && setup ? { base, token, setup } : null;
    },
    timedOut: (out) =>
      `within ${SERVER_START_MS} ms the server did not print all of: a "listening on" line, an API token ` +
      `(pd_…) and a setup link (…/setup/…); it printed ${JSON.stringify(out)}`,
    before: "it was ready",
  });
  const server = ctx.server;
  server.base = found.base;
  server.token = found.token;
  const link = new URL(found.setup, found.base);
  if (link.origin !== found.base) {
    note(`NOTE: the setup link points at ${link.origin}, not at the server's address ${found.base}; using its path`);
  }
  server.setupUrl = found.base + link.pathname + link.search;
  return server;
}

/** Posts a submission to the web form channel's public hook, as the form on a business's site does. */
async function submitWebform(server, channelId, fields) {
  let response;
  try {
    response = await fetch(`${server.base}/hooks/${channelId}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(fields),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch (e) {
    fail(`POST /hooks/${channelId}: ${e.message}`);
  }
  const text = await response.text();
  if (response.status !== 200) fail(`POST /hooks/${channelId} answered ${response.status}: ${text}`);
  const answer = JSON.parse(text);
  if (answer.accepted !== 1) fail(`the web form did not accept the submission: ${text}`);
}

/** The web form ticket with this subject, once the API lists it. */
async function ticketBySubject(server, subject) {
  return until(
    `a web form ticket ${JSON.stringify(subject)} in the API`,
    UI_TIMEOUT_MS,
    async () => (await api(server, "GET", "/api/v1/tickets?channel=webform")).items?.find((t) => t.subject === subject),
    async () => JSON.stringify((await api(server, "GET", "/api/v1/tickets?channel=webform")).items),
  );
}

async function messagesOf(server, ticketId) {
  return (await api(server, "GET", `/api/v1/tickets/${ticketId}/messages`)).items;
}

// The browser.

/** A new browser context whose pages are watched (console errors, uncaught exceptions, CSP
 * violations, requests beyond 127.0.0.1) and screenshotted on failure under `name`. */
async function newContext(ctx, name, options = {}) {
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US", ...options });
  context.setDefaultTimeout(UI_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(API_TIMEOUT_MS);
  let n = 0;
  context.on("page", (page) => watch(ctx, `${name}${n++ ? `-${n}` : ""}`, page, options.bypassCSP));
  return context;
}

function watch(ctx, name, page, bypassCSP) {
  ctx.pages.set(name, page);
  watchPage(ctx, page, {
    label: `[${name}] `,
    onConsole: (m) => {
      if (!bypassCSP && /Content Security Policy/i.test(m.text())) ctx.problems.push(`[${name}] ${m.text()}`);
    },
    onError: (e) => ctx.problems.push(`[${name}] uncaught exception on ${page.url()}: ${e.message}`),
    // Leaving a page aborts its event stream and presence beacons: expected, not worth a line.
    ignoreFailed: (r) => r.failure()?.errorText === "net::ERR_ABORTED",
  });
  page.on("close", () => ctx.pages.delete(name));
}

/** Clicks the submit button of `form` and returns the answer to the POST it makes to `path`
 * (the 303 itself when it redirects). */
async function submitForm(page, form, path, { timeout = UI_TIMEOUT_MS, click = (b) => b.click(), newDocument = false, soft = false } = {}) {
  const button = page.locator(`${form} button[type=submit], ${form} input[type=submit], ${form} button:not([type])`).first();
  if (!(await button.count())) fail(`\`${form}\` on ${page.url()} has no submit button`);
  if (newDocument) await page.evaluate(() => (window.__pdOldDocument = true));
  const answered = page
    .waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === path, { timeout })
    .catch(() => null);
  await click(button);
  const response = await answered;
  if (!response && soft) return null;
  if (!response) fail(`submitting \`${form}\` on ${page.url()} made no POST ${path} within ${timeout} ms`);
  if (newDocument) {
    // The answer's page (same address as the form's, for an answer with an error), not the old one.
    await until(
      `the page answering POST ${path}`,
      UI_TIMEOUT_MS,
      () => page.evaluate(() => window.__pdOldDocument !== true).catch(() => false),
    );
    await page.waitForLoadState("load");
  }
  return response;
}

/** Waits until `page` shows the inbox: the signed-in home page. */
async function expectInbox(page, why) {
  await expectSelector(page, "table#tickets, nav#views", why);
  await page.waitForLoadState("load");
}

/** Fills the password form of the setup or invitation page and submits it: the new agent is signed in. */
async function choosePassword(page, url, password, why) {
  const response = await page.goto(url);
  if (response?.status() !== 200) fail(`GET ${url} answered ${response?.status()}${await described(() => pageText(page))}`);
  await expectSelector(page, "form#password input[name=password]", `${why}: the password form`);
  await page.locator("form#password input[name=password]").fill(password);
  await page.locator("form#password input[name=password_confirm]").fill(password);
  const posted = await submitForm(page, "form#password", new URL(url).pathname);
  if (posted.status() !== 303) fail(`${why}: POST ${new URL(url).pathname} answered ${posted.status()}, expected 303 → /`);
  await expectInbox(page, `${why}: after choosing a password`);
}

/** Signs in through the sign-in form; returns the answer to the POST. */
async function signIn(page, base, email, password) {
  if (new URL(page.url()).pathname !== "/signin") await page.goto(`${base}/signin`);
  await expectSelector(page, "form#signin input[name=email]", "the sign-in form");
  await page.locator("form#signin input[name=email]").fill(email);
  await page.locator("form#signin input[name=password]").fill(password);
  return submitForm(page, "form#signin", "/signin", { newDocument: true });
}

/** The CSRF token of a signed-in page (its meta tag). */
async function csrfOf(page) {
  const token = await page.locator('meta[name="csrf-token"]').getAttribute("content", { timeout: UI_TIMEOUT_MS }).catch(() => null);
  if (!token) fail(`${page.url()} has no <meta name="csrf-token"> with a value`);
  return token;
}

/** Switches the signed-in page's language through `form#language` and waits for `html[lang]`. */
async function switchLanguage(page, lang) {
  await expectSelector(page, "form#language select[name=lang]", "the language switch in the header");
  const answered = page
    .waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/language", {
      timeout: UI_TIMEOUT_MS,
    })
    .catch(() => null);
  await page.locator("form#language select[name=lang]").selectOption(lang);
  const button = page.locator("form#language button, form#language input[type=submit]").first();
  // A button for keyboard and no-JS users; without one the page's script submits on change.
  if ((await button.count()) && (await button.isVisible())) await button.click();
  const response = await answered;
  if (!response) {
    fail(`choosing ${lang} in form#language made no POST /language within ${UI_TIMEOUT_MS} ms (no visible submit button, and the select does not submit itself)`);
  }
  if (response.status() !== 303) fail(`POST /language answered ${response.status()}, expected 303 back`);
  await expectSelector(page, `html[lang=${lang}]`, `after switching to ${lang}`);
  await page.waitForLoadState("load");
}

async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  note(`screenshot ${path}`);
}

/** Runs axe-core on the page now open in `page` (a context with bypassCSP: the script is added
 * inline) and fails on serious or critical violations. */
async function axeCheck(ctx, page, what) {
  await page.addScriptTag({ content: ctx.axeSource });
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${n.failureSummary?.replace(/\s+/g, " ")}`),
    }));
  });
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of violations) {
    const line = `axe ${what}: ${v.impact} ${v.id} (${v.help})`;
    note(bad.includes(v) ? line : `${line} — not serious, reported only`);
  }
  if (bad.length) {
    ctx.axeFailures.push(
      ...bad.map((v) => `${what}: ${v.impact} ${v.id}: ${v.help}\n        ${v.nodes.join("\n        ")}`),
    );
  } else {
    note(`axe ${what}: no serious or critical violation`);
  }
}

// The test.

async function run(ctx) {
  step("1. starting the server on a fresh data directory; the admin chooses a password through the setup link");
  const server = await startHelpdesk(ctx);
  const base = server.base;
  note(`${base}, setup link ${server.setupUrl}`);
  await launchBrowser(ctx);
  const contextA = await newContext(ctx, "admin");
  const admin = await contextA.newPage();
  await choosePassword(admin, server.setupUrl, ADMIN.password, "the admin's setup link");
  const home = await admin.request.get(`${base}/`, { maxRedirects: 0 });
  if (home.status() !== 200) fail(`GET / as the signed-in admin answered ${home.status()}`);
  const csp = home.headers()["content-security-policy"] ?? "";
  if (!/script-src 'self'/.test(csp) || /unsafe-inline|unsafe-eval/.test(csp) || !/frame-ancestors 'none'/.test(csp)) {
    fail(`the inbox's Content-Security-Policy is not the contract's: ${JSON.stringify(csp)}`);
  }
  const again = await admin.request.get(server.setupUrl, { maxRedirects: 0 });
  if (again.status() !== 404) fail(`the used setup link answered ${again.status()}, expected 404`);

  step("2. the admin invites Anna through /settings/agents");
  const settings = await admin.goto(`${base}/settings/agents`);
  if (settings?.status() !== 200) fail(`GET /settings/agents as the admin answered ${settings?.status()}`);
  await expectSelector(admin, "form#invite", "the agents page");
  await admin.locator("form#invite input[name=name]").fill(ANNA.name);
  await admin.locator("form#invite input[name=email]").fill(ANNA.email);
  await admin.locator("form#invite select[name=role]").selectOption("agent");
  const invited = await submitForm(admin, "form#invite", "/settings/agents/invite");
  if (invited.status() >= 400) fail(`POST /settings/agents/invite answered ${invited.status()}${await described(() => pageText(admin))}`);
  await expectSelector(admin, "code#invite-link", "after inviting Anna");
  const inviteText = (await admin.locator("code#invite-link").innerText()).trim();
  let inviteUrl;
  try {
    inviteUrl = new URL(inviteText, base);
  } catch {
    fail(`code#invite-link holds no link: ${JSON.stringify(inviteText)}`);
  }
  if (!inviteUrl.pathname.startsWith("/invite/")) fail(`the invitation link is not /invite/…: ${JSON.stringify(inviteText)}`);
  if (inviteUrl.origin !== base) note(`NOTE: the invitation link points at ${inviteUrl.origin}, not at ${base}; using its path`);
  const inviteLink = base + inviteUrl.pathname;
  note(`invitation ${inviteLink}`);

  step("3. Anna accepts the invitation in another browser, signs out and signs in again");
  const contextB = await newContext(ctx, "anna");
  const anna = await contextB.newPage();
  await choosePassword(anna, inviteLink, ANNA.password, "Anna's invitation");
  const session = (await contextB.cookies()).find((c) => c.name === "pd_session");
  if (!session) fail(`no pd_session cookie after Anna chose her password: ${JSON.stringify(await contextB.cookies())}`);
  if (!session.httpOnly || session.sameSite !== "Lax" || session.path !== "/") {
    fail(`the session cookie is not HttpOnly; SameSite=Lax; Path=/: ${JSON.stringify(session)}`);
  }
  const signedOut = await submitForm(anna, "form#signout", "/signout");
  if (signedOut.status() !== 303) fail(`POST /signout answered ${signedOut.status()}, expected 303 → /signin`);
  await anna.waitForURL((u) => u.pathname === "/signin", { timeout: UI_TIMEOUT_MS }).catch(() =>
    fail(`after signing out Anna is on ${anna.url()}, not /signin`),
  );
  const signedIn = await signIn(anna, base, ANNA.email, ANNA.password);
  if (signedIn.status() !== 303) fail(`POST /signin with Anna's password answered ${signedIn.status()}, expected 303`);
  await expectInbox(anna, "after Anna signed in again");

  step("4. a web form ticket arrives live in Anna's open inbox; the customer's markup stays text");
  const channel = await api(server, "POST", "/api/v1/channels", { plugin: "webform", settings: {}, grants: [] }, 201);
  if (typeof channel.id !== "number") fail(`the new channel has no id: ${JSON.stringify(channel)}`);
  const liveOpened = anna
    .waitForRequest((r) => new URL(r.url()).pathname === "/live", { timeout: UI_TIMEOUT_MS })
    .catch(() => null);
  await expectSelector(anna, "nav#views a[data-view=open]", "the inbox's views");
  await anna.locator("nav#views a[data-view=open]").click();
  await anna.waitForURL((u) => u.searchParams.get("view") === "open", { timeout: UI_TIMEOUT_MS }).catch(() =>
    fail(`the view "open" link led to ${anna.url()}, expected ?view=open`),
  );
  await expectInbox(anna, "the open view");
  if (!(await liveOpened)) fail(`the inbox made no request to /live (live.js) within ${UI_TIMEOUT_MS} ms`);
  // Note, in the page, the moment the row first shows, and a flag a reload would lose.
  await anna.evaluate((subject) => {
    window.__pdNoReload = true;
    window.__pdShownAt = null;
    const shown = () =>
      [...document.querySelectorAll("table#tickets tr.ticket a.subject")].some((a) => a.textContent.includes(subject));
    const observer = new MutationObserver(() => {
      if (shown()) {
        observer.disconnect();
        window.__pdShownAt = Date.now();
      }
    });
    observer.observe(document.documentElement, { childList: true, subtree: true, characterData: true });
  }, SUBJECT);
  await submitWebform(server, channel.id, {
    name: CUSTOMER.name,
    email: CUSTOMER.email,
    subject: SUBJECT,
    message: CUSTOMER_TEXT,
  });
  const answeredAt = Date.now();
  const ticket = await ticketBySubject(server, SUBJECT);
  const rowShown = await until(
    "the new ticket's row in the open inbox",
    Math.max(0, answeredAt + LIVE_WITHIN_MS - Date.now()),
    () => anna.evaluate(() => window.__pdShownAt),
    async () => {
      // Tells "not live" from "not in this view": what the rows URL would answer now.
      const rowsUrl = await anna.locator("table#tickets tbody").getAttribute("data-rows-url");
      const rowsNow = rowsUrl ? await (await anna.request.get(new URL(rowsUrl, base).href)).text() : "(no data-rows-url)";
      return (
        `ticket ${ticket.id} (status ${ticket.status}); rows shown: ${JSON.stringify(
          await anna.locator("table#tickets tr.ticket").allInnerTexts(),
        )}; ${rowsUrl} ${rowsNow.includes(SUBJECT) ? "lists it now" : "does not list it either"}`
      );
    },
  );
  if (!(await anna.evaluate(() => window.__pdNoReload === true))) fail("the inbox reloaded to show the new ticket");
  note(`the row showed ${Math.max(0, rowShown - answeredAt)} ms after the web form's post was answered`);
  const row = anna.locator(`table#tickets tr.ticket[data-ticket-id="${ticket.id}"]`);
  if (!(await row.count())) fail(`the new row has no tr.ticket[data-ticket-id="${ticket.id}"]`);
  const href = await row.locator("a.subject").getAttribute("href");
  if (href !== `/tickets/${ticket.id}`) fail(`the row's a.subject links to ${href}, expected /tickets/${ticket.id}`);
  if ((await row.locator(`input[name=ticket][value="${ticket.id}"]`).count()) !== 1) fail("the row has no checkbox input[name=ticket]");
  for (const part of ["span.channel", "span.customer", "span.status", "span.sla"]) {
    if (!(await row.locator(part).count())) fail(`the row has no ${part}`);
  }
  if (await anna.evaluate(() => window.__pwned !== undefined)) fail("the customer's script ran in the inbox (window.__pwned is set)");

  step("5. Anna opens the ticket: subject, escaped text, customer panel; the admin's presence shows live");
  await row.locator("a.subject").click();
  await anna.waitForURL((u) => u.pathname === `/tickets/${ticket.id}`, { timeout: UI_TIMEOUT_MS }).catch(() =>
    fail(`clicking the subject led to ${anna.url()}, expected /tickets/${ticket.id}`),
  );
  await expectSelector(anna, "ol#conversation", "the ticket page");
  await anna.waitForLoadState("load");
  await expectSelector(anna, "h1#subject", "the ticket page's heading");
  const heading = (await anna.locator("h1#subject").innerText()).trim();
  if (heading !== SUBJECT) fail(`the ticket page's h1#subject is ${JSON.stringify(heading)}, expected ${JSON.stringify(SUBJECT)}`);
  const mainId = await anna.locator("main#main").getAttribute("data-ticket-id");
  if (mainId !== String(ticket.id)) fail(`main#main has data-ticket-id=${mainId}, expected ${ticket.id}`);
  const inbound = anna.locator("ol#conversation li.message.inbound", { hasText: MARKER });
  if ((await inbound.count()) !== 1) {
    fail(`expected one li.message.inbound with the customer's text${await described(() => anna.locator("ol#conversation").innerText())}`);
  }
  const bodyText = await inbound.locator(".body").innerText();
  if (!bodyText.includes("<script>window.__pwned=1</script>") || !bodyText.includes('<img src=x onerror="window.__pwned=2">')) {
    fail(`the customer's markup is not shown as text: .body reads ${JSON.stringify(bodyText)}`);
  }
  if (await anna.locator("ol#conversation script, ol#conversation img[src=x]").count()) {
    fail("the customer's <script> or <img> became an element of the page");
  }
  if (await anna.evaluate(() => window.__pwned !== undefined)) fail("the customer's script ran on the ticket page (window.__pwned is set)");
  const customerPanel = await anna.locator("aside#customer").innerText().catch(() => fail("the ticket page has no aside#customer"));
  if (!customerPanel.includes(CUSTOMER.name)) fail(`aside#customer does not name ${CUSTOMER.name}: ${JSON.stringify(customerPanel)}`);
  await expectSelector(anna, "p#presence[aria-live=polite]", "the presence line of the ticket page");
  await admin.goto(`${base}/tickets/${ticket.id}`);
  const adminOpened = Date.now();
  await expectSelector(admin, "ol#conversation", "the admin's ticket page");
  await until(
    `"${ADMIN.name}" in Anna's p#presence`,
    Math.max(0, adminOpened + LIVE_WITHIN_MS - Date.now()),
    async () => (await anna.locator("p#presence").innerText()).includes(ADMIN.name),
    () => anna.locator("p#presence").innerText().then((t) => JSON.stringify(t)),
  );
  note(`Anna saw the admin's presence ${Date.now() - adminOpened} ms after the admin's page loaded`);
  if (await admin.evaluate(() => window.__pwned !== undefined)) fail("the customer's script ran on the admin's ticket page");

  step(`6. Anna answers with a text module (search "${MODULE_QUERY}"), then pending; the reply is stored once`);
  await expectSelector(anna, "form#composer textarea#body[name=body]", "the composer");
  const textarea = anna.locator("form#composer textarea#body");
  const before = await textarea.inputValue();
  await anna.locator("#module-search").fill(MODULE_QUERY);
  await expectSelector(anna, "#module-results button", `text modules found for ${JSON.stringify(MODULE_QUERY)}`, { state: "visible" });
  await anna.locator("#module-results button").first().click();
  const inserted = await until(
    "the text module's rendered text in the composer",
    UI_TIMEOUT_MS,
    async () => {
      const value = await textarea.inputValue();
      return value.trim() && value !== before ? value : null;
    },
    () => textarea.inputValue().then((v) => JSON.stringify(v)),
  );
  if (inserted.includes("{{")) fail(`the inserted text module is not rendered: ${JSON.stringify(inserted)}`);
  note(`inserted ${JSON.stringify(inserted.slice(0, 80))}…`);
  await textarea.fill(`${inserted}\n${REPLY_LINE}`);
  await anna.locator("form#composer select[name=kind]").selectOption("reply");
  await anna.locator("form#composer select[name=then]").selectOption("pending");
  const undoSeconds = Number((await anna.locator("form#composer").getAttribute("data-undo-seconds")) || 0);
  if (undoSeconds) note(`the composer waits ${undoSeconds} s for an undo before it sends`);
  const sendTimeout = undoSeconds * 1000 + UI_TIMEOUT_MS;
  const sent = await submitForm(anna, "form#composer", `/tickets/${ticket.id}/messages`, {
    timeout: sendTimeout,
    click: () => anna.locator("#send").click(),
  });
  if (sent.status() >= 400) fail(`sending the reply answered ${sent.status()}`);
  await expectSelector(
    anna,
    `ol#conversation li.message.outbound:has-text(${JSON.stringify(REPLY_LINE)})`,
    "the sent reply in the conversation",
  );
  const replies = (await messagesOf(server, ticket.id)).filter((m) => m.body.includes(REPLY_LINE));
  if (replies.length !== 1 || replies[0].direction !== "outbound") {
    fail(`expected the reply once, outbound, in the API: ${JSON.stringify(replies)}`);
  }
  const afterReply = await api(server, "GET", `/api/v1/tickets/${ticket.id}`);
  if (afterReply.status !== "pending") fail(`"then: pending" left the ticket ${afterReply.status}`);

  // A double-clicked send: both clicks may reach the server, the reply is stored once.
  await expectSelector(anna, "form#composer textarea#body", "the composer after sending");
  await anna.locator("form#composer textarea#body").fill(REPLY_TWICE);
  await anna.locator("form#composer select[name=then]").selectOption("keep");
  // With an undo delay the first click starts the countdown and a second one must neither undo
  // it nor send again.
  // Which element each click of the double-click hits, noted in the page.
  await anna.evaluate(() => {
    window.__pdClicks = [];
    document.addEventListener("click", (e) => window.__pdClicks.push(e.target.outerHTML.slice(0, 100)), true);
  });
  const doubled = await submitForm(anna, "form#composer", `/tickets/${ticket.id}/messages`, {
    timeout: sendTimeout,
    click: () => anna.locator("#send").dblclick(),
    soft: true,
  });
  if (!doubled) {
    const clicks = await anna.evaluate(() => window.__pdClicks).catch(() => "?");
    deviation(
      ctx,
      `a double-clicked #send sent nothing (no POST /tickets/${ticket.id}/messages within ${sendTimeout} ms); ` +
        `the two clicks hit: ${JSON.stringify(clicks)}`,
    );
    note("sending the double-clicked reply again with one click, to go on");
    await submitForm(anna, "form#composer", `/tickets/${ticket.id}/messages`, {
      timeout: sendTimeout,
      click: () => anna.locator("#send").click(),
    });
  }
  await expectSelector(
    anna,
    `ol#conversation li.message.outbound:has-text(${JSON.stringify(REPLY_TWICE)})`,
    "the double-clicked reply in the conversation",
  );
  await watchCount(server, ticket.id, REPLY_TWICE, "the double-clicked reply");
  const shownTwice = await anna.locator("ol#conversation li.message", { hasText: REPLY_TWICE }).count();
  if (shownTwice !== 1) fail(`the double-clicked reply shows ${shownTwice} times in the conversation`);

  // The same form posted twice (same request_id): one message.
  await expectSelector(anna, "form#composer input[name=request_id]", "the composer's request_id");
  const form = {
    csrf: await anna.locator("form#composer input[name=csrf]").inputValue(),
    seen: await anna.locator("form#composer input[name=seen]").inputValue(),
    request_id: await anna.locator("form#composer input[name=request_id]").inputValue(),
    kind: "note",
    then: "keep",
    body: REPLY_REPLAYED,
  };
  const path = `${base}/tickets/${ticket.id}/messages`;
  // As a browser posts a form: with the page's Origin (the server refuses a post with neither
  // Origin nor Referer).
  const once = await anna.request.post(path, { form, headers: { Origin: base }, maxRedirects: 0 });
  const twice = await anna.request.post(path, { form, headers: { Origin: base }, maxRedirects: 0 });
  if (once.status() >= 400) fail(`posting the composer's form answered ${once.status()}: ${(await once.text()).slice(0, 300)}`);
  if (twice.status() >= 500) fail(`posting the same request_id again answered ${twice.status()}`);
  note(`the same request_id posted twice: ${once.status()}, then ${twice.status()}`);
  await watchCount(server, ticket.id, REPLY_REPLAYED, "the note posted twice with one request_id");

  step("6b. the customer writes again while Anna's ticket page is open: it appears without a reload");
  const liveLine = `Still waiting ${Date.now()}`;
  await anna.evaluate(() => {
    window.__samePage = true;
  });
  const written = Date.now();
  await api(server, "POST", `/api/v1/tickets/${ticket.id}/messages`, { body: liveLine }, 201);
  await until(
    "the customer's new message in Anna's open conversation",
    LIVE_WITHIN_MS,
    async () => (await anna.locator("ol#conversation li.message.inbound", { hasText: liveLine }).count()) === 1,
    () => anna.locator("ol#conversation").innerText().then((t) => JSON.stringify(t.slice(-400))),
  );
  if (!(await anna.evaluate(() => window.__samePage === true))) fail("the ticket page reloaded instead of updating");
  note(`the customer's message showed in Anna's conversation ${Date.now() - written} ms after the API answered`);

  step("7. keyboard: ? opens the shortcuts, Escape closes them, j selects the first row, Enter opens it");
  await submitWebform(server, channel.id, {
    name: "Max Muster",
    email: "max@example.com",
    subject: KEYBOARD_SUBJECT,
    message: `Noch eine Frage ${MARKER}`,
  });
  const keyboardTicket = await ticketBySubject(server, KEYBOARD_SUBJECT);
  await anna.goto(`${base}/`);
  await expectInbox(anna, "the inbox");
  await anna.locator("nav#views a[data-view=open]").click();
  await anna.waitForURL((u) => u.searchParams.get("view") === "open", { timeout: UI_TIMEOUT_MS });
  await expectSelector(anna, `tr.ticket[data-ticket-id="${keyboardTicket.id}"]`, "the second ticket in the open view");
  await anna.waitForLoadState("load");
  // Shortcuts act when no field has the focus.
  await anna.evaluate(() => document.activeElement?.blur?.());
  await expectSelector(anna, "dialog#shortcuts", "the shortcuts dialog of every page");
  await anna.keyboard.press("?");
  await expectSelector(anna, "dialog#shortcuts[open]", "after pressing ?", { state: "visible" });
  if (!(await anna.locator("dialog#shortcuts").innerText()).trim()) fail("dialog#shortcuts lists nothing");
  await anna.keyboard.press("Escape");
  await expectSelector(anna, "dialog#shortcuts:not([open])", "after pressing Escape");
  await anna.keyboard.press("j");
  await expectSelector(anna, "tr.ticket.selected", "after pressing j");
  const selected = await anna.evaluate(() => {
    const rows = [...document.querySelectorAll("table#tickets tr.ticket")];
    const index = rows.findIndex((r) => r.classList.contains("selected"));
    return { index, id: rows[index]?.dataset.ticketId, aria: rows[index]?.getAttribute("aria-selected"), count: rows.filter((r) => r.classList.contains("selected")).length };
  });
  if (selected.index !== 0 || selected.count !== 1) fail(`j did not select (only) the first row: ${JSON.stringify(selected)}`);
  if (selected.aria !== "true") fail(`the selected row has aria-selected=${selected.aria}, expected true`);
  await anna.keyboard.press("Enter");
  await anna.waitForURL((u) => u.pathname === `/tickets/${selected.id}`, { timeout: UI_TIMEOUT_MS }).catch(() =>
    fail(`Enter on the selected row led to ${anna.url()}, expected /tickets/${selected.id}`),
  );
  await expectSelector(anna, "ol#conversation", "the ticket opened with Enter");

  step("8. languages: German from Accept-Language on the sign-in page; Anna switches with form#language");
  const contextDe = await newContext(ctx, "german", { locale: "de-DE" });
  const german = await contextDe.newPage();
  await german.goto(`${base}/signin`);
  await expectSelector(german, "html[lang=de]", "the sign-in page for a browser asking for German");
  const contextEn = await newContext(ctx, "english");
  const english = await contextEn.newPage();
  await english.goto(`${base}/signin`);
  await expectSelector(english, "html[lang=en]", "the sign-in page for a browser asking for English");
  const deButton = (await german.locator("form#signin button[type=submit]").innerText()).trim();
  const enButton = (await english.locator("form#signin button[type=submit]").innerText()).trim();
  note(`sign-in button: de ${JSON.stringify(deButton)}, en ${JSON.stringify(enButton)}`);
  if (!deButton || !enButton || deButton === enButton) fail(`the sign-in button reads ${JSON.stringify(deButton)} in German and ${JSON.stringify(enButton)} in English`);
  await anna.goto(`${base}/`);
  await expectInbox(anna, "Anna's inbox");
  await expectSelector(anna, "html[lang=en]", "Anna's inbox in her browser's English");
  await switchLanguage(anna, "de");
  const langCookie = (await contextB.cookies()).find((c) => c.name === "pd_lang");
  if (langCookie?.value !== "de") fail(`switching to German set no pd_lang=de cookie: ${JSON.stringify(langCookie)}`);
  await expectInbox(anna, "the inbox after switching to German");
  await screenshot(anna, "inbox-de");
  await switchLanguage(anna, "en");

  step("9. CSRF: a cross-site post and a post without a token are refused; nothing is stored");
  await anna.goto(`${base}/tickets/${ticket.id}`);
  await expectSelector(anna, "form#composer input[name=csrf]", "the composer's csrf field");
  const count = (await messagesOf(server, ticket.id)).length;
  const fields = {
    csrf: await anna.locator("form#composer input[name=csrf]").inputValue(),
    seen: await anna.locator("form#composer input[name=seen]").inputValue(),
    request_id: `csrf-${MARKER}-1`,
    kind: "reply",
    then: "keep",
    body: CSRF_TEXT,
  };
  const crossSite = await contextB.request.post(path, { form: fields, headers: { Origin: EVIL_ORIGIN }, maxRedirects: 0 });
  if (crossSite.status() !== 403) fail(`a post with Origin ${EVIL_ORIGIN} and a valid token answered ${crossSite.status()}, expected 403`);
  const { csrf: _token, ...tokenless } = fields;
  const noToken = await contextB.request.post(path, { form: { ...tokenless, request_id: `csrf-${MARKER}-2` }, maxRedirects: 0 });
  if (noToken.status() !== 403) fail(`a post without csrf field or X-CSRF-Token answered ${noToken.status()}, expected 403`);
  const noTokenSameOrigin = await contextB.request.post(path, {
    form: { ...tokenless, request_id: `csrf-${MARKER}-3` },
    headers: { Origin: base },
    maxRedirects: 0,
  });
  if (noTokenSameOrigin.status() !== 403) fail(`a same-origin post without a token answered ${noTokenSameOrigin.status()}, expected 403`);
  const after = await messagesOf(server, ticket.id);
  if (after.length !== count || after.some((m) => m.body.includes(CSRF_TEXT))) {
    fail(`a refused post stored a message: ${count} messages before, ${after.length} after`);
  }

  step("11. an agent is refused the admin pages");
  const refused = await anna.goto(`${base}/settings/agents`);
  if (refused?.status() !== 403) fail(`GET /settings/agents as Anna (an agent) answered ${refused?.status()}, expected 403`);
  if (await anna.locator("form#invite").count()) fail("the refused page still shows form#invite");

  step("12. accessibility: axe-core on the sign-in page, the inbox and the ticket page");
  ctx.axeSource = readFileSync(join(dirname(createRequire(import.meta.url).resolve("axe-core")), "axe.min.js"), "utf8");
  // axe is added as an inline script, which the pages' CSP forbids: these contexts bypass it.
  const axeSignedOut = await newContext(ctx, "axe-signin", { bypassCSP: true });
  const axeOut = await axeSignedOut.newPage();
  await axeOut.goto(`${base}/signin`);
  await expectSelector(axeOut, "form#signin", "the sign-in page");
  await axeCheck(ctx, axeOut, "sign-in page");
  const axeSignedIn = await newContext(ctx, "axe-anna", { bypassCSP: true, storageState: await contextB.storageState() });
  const axeIn = await axeSignedIn.newPage();
  await axeIn.goto(`${base}/`);
  await expectInbox(axeIn, "the inbox for axe");
  await axeCheck(ctx, axeIn, "inbox");
  await axeIn.goto(`${base}/tickets/${ticket.id}`);
  await expectSelector(axeIn, "ol#conversation", "the ticket page for axe");
  await axeCheck(ctx, axeIn, "ticket page");
  await axeSignedOut.close();
  await axeSignedIn.close();
  if (ctx.axeFailures.length) deviation(ctx, `axe-core found serious or critical violations:\n      ${ctx.axeFailures.join("\n      ")}`);

  step("13. screenshots of the main pages");
  await screenshot(english, "signin-en");
  await screenshot(german, "signin-de");
  await anna.goto(`${base}/`);
  await expectInbox(anna, "the inbox");
  await screenshot(anna, "inbox-en");
  await anna.goto(`${base}/tickets/${ticket.id}`);
  await expectSelector(anna, "ol#conversation", "the ticket page");
  await screenshot(anna, "ticket-en");
  await contextDe.close();

  step("14. signing out everywhere ends Anna's other sessions, not the admin's");
  const contextE = await newContext(ctx, "anna-2");
  const anna2 = await contextE.newPage();
  const secondSignIn = await signIn(anna2, base, ANNA.email, ANNA.password);
  if (secondSignIn.status() !== 303) fail(`Anna's second sign-in answered ${secondSignIn.status()}, expected 303`);
  await expectInbox(anna2, "Anna's second session");
  const token = await csrfOf(anna2);
  const everywhere = await anna2.request.post(`${base}/signout/everywhere`, {
    form: { csrf: token },
    headers: { "X-CSRF-Token": token, Origin: base },
    maxRedirects: 0,
  });
  if (everywhere.status() >= 400) fail(`POST /signout/everywhere answered ${everywhere.status()}`);
  await anna.goto(`${base}/`);
  if (new URL(anna.url()).pathname !== "/signin") fail(`after signing out everywhere Anna's first browser opened ${anna.url()}, expected /signin`);
  await anna2.goto(`${base}/`);
  if (new URL(anna2.url()).pathname !== "/signin") fail(`after signing out everywhere Anna's second browser opened ${anna2.url()}, expected /signin`);
  await admin.goto(`${base}/`);
  await expectInbox(admin, "the admin, still signed in after Anna signed out everywhere");

  // Last: ten failures from 127.0.0.1 throttle the address as well as the account, so no sign-in
  // from this machine works for a minute after it.
  step("10. the sign-in throttle: ten wrong passwords, then the right one is refused with 429");
  const contextF = await newContext(ctx, "throttle");
  const guesser = await contextF.newPage();
  await guesser.goto(`${base}/signin`);
  for (let i = 1; i <= 10; i++) {
    const wrong = await signIn(guesser, base, ANNA.email, `falsch-${i}`);
    if (wrong.status() !== 401) fail(`wrong password #${i} answered ${wrong.status()}, expected 401`);
    await expectSelector(guesser, "p.error[role=alert]", `the error after wrong password #${i}`);
  }
  const throttled = await signIn(guesser, base, ANNA.email, ANNA.password);
  if (throttled.status() !== 429) fail(`the 11th attempt (right password) answered ${throttled.status()}, expected 429`);
  const retryAfter = (await throttled.allHeaders())["retry-after"];
  if (!/^\d+$/.test(retryAfter ?? "") || Number(retryAfter) < 1) fail(`the 429 has no Retry-After in seconds: ${JSON.stringify(retryAfter)}`);
  await expectSelector(guesser, "p.error", "the 429 page's message");
  await expectSelector(guesser, "form#signin", "the 429 page's form");
  note(`429, Retry-After ${retryAfter}: ${JSON.stringify((await guesser.locator("p.error").first().innerText()).trim())}`);
  if (await guesser.locator("nav#views").count()) fail("the throttled attempt signed Anna in");

  step("the pages ran without uncaught errors or CSP violations, and stayed on 127.0.0.1");
  if (ctx.problems.length) fail(`the pages reported:\n      ${ctx.problems.join("\n      ")}`);
  if (ctx.foreign.length) fail(`the pages made requests beyond 127.0.0.1: ${ctx.foreign.join(", ")}`);
}

/** Watches the API for DUPLICATE_SETTLE_MS: the message with `text` must be stored exactly once. */
async function watchCount(server, ticketId, text, what) {
  const deadline = Date.now() + DUPLICATE_SETTLE_MS;
  let n = 0;
  for (;;) {
    const found = (await messagesOf(server, ticketId)).filter((m) => m.body.includes(text));
    n = found.length;
    if (n > 1) fail(`${what} is stored ${n} times: ${JSON.stringify(found.map((m) => ({ id: m.id, direction: m.direction })))}`);
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (n !== 1) fail(`${what} is not stored`);
}

/** The test's steps; then the checks that failed along the way fail the run. */
async function runAll(ctx) {
  try {
    await run(ctx);
  } catch (e) {
    if (ctx.deviations.length) console.error(`\nfailed along the way, before:\n  - ${ctx.deviations.join("\n  - ")}`);
    throw e;
  }
  if (ctx.deviations.length) {
    setStep("the end");
    fail(`${ctx.deviations.length} check(s) failed along the way:\n  - ${ctx.deviations.join("\n  - ")}`);
  }
}

await runTest(testContext("workspace", { problems: [], pages: new Map(), axeFailures: [], deviations: [] }), {
  name: "agent workspace in a browser",
  run: runAll,
  screenshots: async (ctx) => {
    for (const [name, page] of ctx.pages) {
      const shot = join(ctx.dir, `failure-${name}.png`);
      const error = await failureScreenshot(page, shot);
      console.error(error ? `  (no screenshot of ${name}'s page: ${error})` : `  screenshot of ${name}'s page (${page.url()}): ${shot}`);
    }
  },
  pagesSaid: "the pages said",
  consoleTail: 40,
  okNote: () => `screenshots in ${SCREENSHOTS}`,
});
