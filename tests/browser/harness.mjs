// What the real-browser tests (webchat.mjs, workspace.mjs) share: the server binary and the
// browser to use, step-by-step reporting, the server started and stopped by its PID in a scratch
// directory, calls to its API, Chromium, and a run that on failure prints the step, what was
// seen, what the pages said and the server's log, and keeps the scratch directory for a look.
// Everything stays on 127.0.0.1.

import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

// The repository, for the default binary and the files a test reads.
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
// PLUGDESK_BIN names another binary; CHROMIUM another browser.
export const BIN = resolve(process.env.PLUGDESK_BIN || join(ROOT, "target/debug/plugdesk"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Headless and quiet: no sandbox (containers), no calls home beyond 127.0.0.1.
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

// Generous: the first request waits for the bundled plugins to compile in a debug build.
export const SERVER_START_MS = 30_000;
export const API_TIMEOUT_MS = 45_000;
// Anything the pages do on their own (load, submit, render): a slow debug build on a busy
// machine, never a reason to wait on a working page.
export const UI_TIMEOUT_MS = 10_000;

// Steps and failures.

/** A failure of one step, with what was seen: reported by its message alone, without a stack. */
class Failure extends Error {}

let currentStep = "setting up";

/** Starts a step: printed now, and named in the report if anything fails before the next one. */
export function step(name) {
  setStep(name);
  console.log(`--> ${name}`);
}

/** Names the step a failure is reported at, without printing it. */
export function setStep(name) {
  currentStep = name;
}

/** The step running now, for checks that report it themselves. */
export function stepName() {
  return currentStep;
}

/** A line of detail under the current step. */
export function note(text) {
  console.log(`    ${text}`);
}

/** Fails the current step with what was seen. */
export function fail(message) {
  throw new Failure(message);
}

/** Polls `probe` until it returns something truthy or the deadline passes; `seen` describes the
 * last state for the failure message. */
export async function until(what, timeoutMs, probe, seen = () => "") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) fail(`${what} did not happen within ${timeoutMs} ms${await described(seen)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `seen()` as the tail of a failure message; a state that cannot be described says so. */
export async function described(seen) {
  try {
    const s = await seen();
    return s ? `; seen: ${s}` : "";
  } catch (e) {
    return `; (could not describe the state: ${e.message})`;
  }
}

// The server.

/** The server's environment: warnings only, as text, and none of the caller's settings that would
 * point it at another database or address (nor the names in `alsoRemove`), so that it stays in
 * its scratch directory whatever the caller's shell points at. */
export function serverEnv(alsoRemove = []) {
  const env = { ...process.env, PLUGDESK_LOG: "warn", PLUGDESK_LOG_FORMAT: "text" };
  for (const k of ["DATABASE_URL", "PLUGDESK_DATA", "PLUGDESK_LISTEN", ...alsoRemove]) delete env[k];
  return env;
}

/** The server's data directory (SQLite and its key) inside the scratch directory. */
export function dataDir(ctx) {
  return join(ctx.dir, "data");
}

/** Fails at once, with what to do, when there is no binary to test. */
export function checkBinary() {
  if (!existsSync(BIN)) fail(`no server binary at ${BIN}: run \`cargo build\` or set PLUGDESK_BIN`);
}

/** The server's address, once its "listening on" line is in `out`. */
export function listeningOn(out) {
  return /listening on (http:\/\/127\.0\.0\.1:\d+) \(database: /.exec(out)?.[1];
}

/** Starts `plugdesk serve` on a free port of 127.0.0.1 with the data in `dataDir(ctx)` and
 * `ctx.dir` as its working directory, where plugdesk.toml is read from. `ctx.server` is set as
 * soon as the process runs, so it is stopped (by its PID) even when it never comes up; its output
 * is kept in `ctx.server.log` and server.log for the failure report.
 *
 * Resolves with the first truthy `ready(out)`, `out` being all the server has printed so far;
 * fails with `timedOut(out)` when that takes longer than SERVER_START_MS, and with the exit status
 * when the server ends "before `before`". */
export async function startServer(ctx, { env, ready, timedOut, before }) {
  checkBinary();
  // Replies leave the outbox at once instead of on the default 500 ms tick.
  writeFileSync(join(ctx.dir, "plugdesk.toml"), "[outbox]\ntick_ms = 20\n");
  const logPath = join(ctx.dir, "server.log");
  const child = spawn(BIN, ["serve", "--data", dataDir(ctx), "--listen", "127.0.0.1:0"], {
    cwd: ctx.dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server = (ctx.server = { child, logPath, log: "", exited: null });
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

  return new Promise((resolveReady, rejectReady) => {
    let out = "";
    const timer = setTimeout(() => rejectReady(new Failure(timedOut(out))), SERVER_START_MS);
    child.stdout.on("data", (chunk) => {
      record(chunk);
      out += chunk;
      const found = ready(out);
      if (found) {
        clearTimeout(timer);
        resolveReady(found);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rejectReady(new Failure(`the server exited (code ${code}, signal ${signal}) before ${before}`));
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      rejectReady(new Failure(`cannot start ${BIN}: ${e.message}`));
    });
  });
}

/** Calls the API with the admin token; fails the step unless the status is `expect`. */
export async function api(server, method, path, body, expect = 200) {
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

// The browser.

/** Starts Chromium as `ctx.browser`, where the cleanup closes it. */
export async function launchBrowser(ctx) {
  ctx.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  return ctx.browser;
}

/** Notes what `page` says for the failure report (console errors and warnings, uncaught
 * exceptions, failed requests: in `ctx.console`, after `label`) and every request it makes beyond
 * 127.0.0.1 (in `ctx.foreign`, which the tests check is empty). `onConsole` and `onError` see the
 * console messages and exceptions too; failed requests that `ignoreFailed` accepts are left out. */
export function watchPage(ctx, page, { label = "", onConsole, onError, ignoreFailed = () => false } = {}) {
  page.on("console", (m) => {
    if (!["error", "warning"].includes(m.type())) return;
    ctx.console.push(`${label}${m.type()}: ${m.text()}`);
    onConsole?.(m);
  });
  page.on("pageerror", (e) => {
    ctx.console.push(`${label}uncaught: ${e.message}`);
    onError?.(e);
  });
  page.on("requestfailed", (r) => {
    if (ignoreFailed(r)) return;
    ctx.console.push(`${label}request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.protocol.startsWith("http") && url.hostname !== "127.0.0.1") ctx.foreign.push(`${label}${r.url()}`);
  });
}

/** Screenshots `page` to `path` after a failure; returns why not when it cannot. */
export async function failureScreenshot(page, path) {
  try {
    await page.screenshot({ path, fullPage: true, timeout: 5000 });
    return null;
  } catch (e) {
    return e.message;
  }
}

// The run.

/** What a test carries from step to step, and what the report and the cleanup read: a fresh
 * scratch directory, what the pages said, their requests beyond 127.0.0.1, and (set once they
 * run) `server` and `browser`; `extra` adds the test's own. */
export function testContext(name, extra = {}) {
  return { dir: mkdtempSync(join(tmpdir(), `plugdesk-${name}-`)), console: [], foreign: [], ...extra };
}

/** Runs `test.run(ctx)` and ends the process: with the ok line `${test.name}: ok in … s
 * (${test.okNote(ctx)})`, or on failure with exit code 1 after the report (the step, the message,
 * `test.screenshots(ctx)`, the last `test.consoleTail` lines of what the pages said under
 * `test.pagesSaid`, requests beyond 127.0.0.1, the end of the server's log). An interrupt (Ctrl-C,
 * SIGTERM) stops everything and exits 130. `test.close(ctx)` stops the test's own servers. */
export async function runTest(ctx, test) {
  const started = Date.now();
  let failed = null;
  const stop = async (signal) => {
    console.error(`\ninterrupted (${signal}); stopping`);
    await cleanup(ctx, test, true);
    process.exit(130);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    await test.run(ctx);
  } catch (e) {
    failed = e;
  }
  if (failed) {
    console.error(`\nFAILED at step "${currentStep}":`);
    console.error(`  ${failed instanceof Failure ? failed.message : failed.stack || failed}`);
    await test.screenshots(ctx);
    const said = test.consoleTail ? ctx.console.slice(-test.consoleTail) : ctx.console;
    if (said.length) console.error(`  ${test.pagesSaid}:\n    ${said.join("\n    ")}`);
    if (ctx.foreign.length) console.error(`  requests beyond 127.0.0.1:\n    ${ctx.foreign.join("\n    ")}`);
    if (ctx.server?.log.trim()) {
      const tail = ctx.server.log.trim().split("\n").slice(-30).join("\n    ");
      console.error(`  the server's output (last lines; all of it in ${ctx.server.logPath}):\n    ${tail}`);
    }
  }
  // Keep what there is to look at after a failure: the screenshots, the server's log and database
  // (the pages open only once the server runs).
  const keep = failed && ctx.server;
  await cleanup(ctx, test, !keep);
  if (keep) console.error(`  kept for a look: ${ctx.dir}`);
  if (failed) process.exit(1);
  console.log(`${test.name}: ok in ${((Date.now() - started) / 1000).toFixed(1)} s (${test.okNote(ctx)})`);
}

/** Closes the browser, the test's own servers and the helpdesk; removes the scratch directory
 * unless it is kept for a look after a failure. */
async function cleanup(ctx, test, remove) {
  await ctx.browser?.close().catch((e) => console.error(`closing the browser: ${e.message}`));
  ctx.browser = null;
  await test.close?.(ctx);
  await ctx.server?.stop().catch((e) => console.error(`stopping the server: ${e.message}`));
  if (remove) rmSync(ctx.dir, { recursive: true, force: true });
}
