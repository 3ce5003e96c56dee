// The reply composer of a ticket page: server-side drafts, text modules,
// the SMS length counter and "send with undo". `smsCount` is pure so it can
// be tested under node (composer.test.mjs); everything else starts in init().

// GSM 03.38 default alphabet (one septet each) and its extension table (two
// septets each: escape + char). ESC itself is left out: no one types it.
const GSM_BASIC = new Set(
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
);
const GSM_EXTENDED = new Set("\f^{}\\[]~|€");

// Length of `text` as an SMS: `chars` counts what the limits count (septets
// for GSM-7, UTF-16 code units for UCS-2, so an emoji counts 2), `parts` is
// the number of SMS it is sent as (0 for empty text). A single SMS holds 160
// septets or 70 code units; concatenated parts lose room to their header,
// leaving 153 and 67.
export function smsCount(text) {
  let septets = 0;
  for (const ch of text) {
    if (GSM_BASIC.has(ch)) septets += 1;
    else if (GSM_EXTENDED.has(ch)) septets += 2;
    else {
      const units = text.length;
      return { chars: units, parts: parts(units, 70, 67), encoding: "ucs2" };
    }
  }
  return { chars: septets, parts: parts(septets, 160, 153), encoding: "gsm7" };
}

function parts(units, single, multi) {
  if (units === 0) return 0;
  return units <= single ? 1 : Math.ceil(units / multi);
}

// ---- page behaviour -------------------------------------------------------

let ctx;
let form, body, sendButton;
let base; // "/tickets/{id}"
let submitted = false; // the real submit happened; nothing may save or send again

export function init(context) {
  if (typeof document === "undefined") return;
  ctx = context;
  form = document.querySelector("form#composer");
  body = form?.querySelector("textarea#body");
  if (!form || !body || !ctx.ticketId) return;
  sendButton = form.querySelector("button#send");
  base = `/tickets/${encodeURIComponent(ctx.ticketId)}`;

  initDrafts();
  initModules();
  initSms();
  initSend();

  body.addEventListener("input", (e) => {
    if (e.inputType === "insertText" && e.data === ":") openModulesOnColons();
    updateSms();
    scheduleDraft();
  });
}

function statusElement(id, after) {
  let el = document.getElementById(id);
  if (!el) {
    el = document.createElement("p");
    el.id = id;
    el.setAttribute("role", "status");
    if (after) after.after(el);
    else form.append(el);
  }
  return el;
}

// ---- drafts -----------------------------------------------------------------

let draftStatus;
let draftTimer = 0;
let savedText = "";
let saving = false;
let saveAgain = false;

function initDrafts() {
  draftStatus = statusElement("draft-status");
  // The textarea comes prefilled with the stored draft.
  savedText = body.value;
  window.addEventListener("pagehide", () => {
    // Last keystrokes before leaving still reach the server.
    if (!submitted && body.value !== savedText) {
      ctx
        .send(`${base}/draft`, { method: "PUT", json: { body: body.value }, keepalive: true })
        .catch(() => {});
    }
  });
}

function scheduleDraft() {
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDraft, 800);
}

// One PUT at a time, so an older text can never land after a newer one.
async function saveDraft() {
  clearTimeout(draftTimer);
  if (submitted) return;
  const text = body.value;
  if (text === savedText) return;
  if (saving) {
    saveAgain = true;
    return;
  }
  saving = true;
  try {
    const res = await ctx.send(`${base}/draft`, { method: "PUT", json: { body: text } });
    if (!res.ok) throw new Error(`draft: ${res.status}`);
    savedText = text;
    draftStatus.textContent = ctx.t("draft_saved");
  } catch {
    draftStatus.textContent = ctx.t("draft_failed");
  } finally {
    saving = false;
    if (saveAgain) {
      saveAgain = false;
      saveDraft();
    }
  }
}

// ---- text modules -------------------------------------------------------------

let search, results;
let searchTimer = 0;
let searchAbort = null;
let bodyFocused = false;

function initModules() {
  search = document.getElementById("module-search");
  results = document.getElementById("module-results");
  body.addEventListener("focus", () => (bodyFocused = true), { once: true });
  if (!search || !results) return;

  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(findModules, 200);
  });
  search.addEventListener("keydown", (e) => {
    const buttons = resultButtons();
    if (e.key === "ArrowDown" && buttons.length) {
      e.preventDefault();
      buttons[0].focus();
    } else if (e.key === "Enter") {
      // Never let Enter here submit the composer (and send the reply).
      e.preventDefault();
      if (buttons.length) chooseModule(buttons[0].dataset.key);
      else findModules();
    } else if (e.key === "Escape") {
      e.preventDefault();
      closeModules();
    }
  });
  results.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-key]");
    if (button) chooseModule(button.dataset.key);
  });
  results.addEventListener("keydown", (e) => {
    const buttons = resultButtons();
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (e.key === "ArrowDown") next = buttons[Math.min(index + 1, buttons.length - 1)];
    else if (e.key === "ArrowUp") next = index === 0 ? search : buttons[index - 1];
    else if (e.key === "Home") next = buttons[0];
    else if (e.key === "End") next = buttons[buttons.length - 1];
    else if (e.key === "Escape") {
      e.preventDefault();
      closeModules();
      return;
    }
    if (next) {
      e.preventDefault();
      next.focus();
    }
  });
}

function resultButtons() {
  return results ? [...results.querySelectorAll("button[data-key]")] : [];
}

function showMessage(text) {
  const li = document.createElement("li");
  li.className = "none";
  li.textContent = text;
  results.replaceChildren(li);
}

async function findModules() {
  clearTimeout(searchTimer);
  const q = search.value.trim();
  searchAbort?.abort();
  if (!q) {
    results.replaceChildren();
    return;
  }
  const abort = (searchAbort = new AbortController());
  let items;
  try {
    const res = await ctx.get(`${base}/modules?q=${encodeURIComponent(q)}`, {
      signal: abort.signal,
      accept: "application/json",
    });
    items = (await res.json()).items;
    if (!Array.isArray(items)) throw new Error("modules: no items");
  } catch {
    if (!abort.signal.aborted) showMessage(ctx.t("module_failed"));
    return;
  }
  if (abort.signal.aborted) return;
  if (!items.length) {
    showMessage(ctx.t("module_none"));
    return;
  }
  results.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.key = String(item.key ?? "");
      button.textContent = String(item.name ?? item.key ?? "");
      const preview = document.createElement("span");
      preview.textContent = String(item.preview ?? "");
      li.append(button, " ", preview);
      return li;
    }),
  );
}

async function chooseModule(key) {
  let text;
  try {
    const res = await ctx.send(`${base}/modules/render`, { json: { key } });
    if (!res.ok || res.redirected) throw new Error(`render: ${res.status}`);
    text = (await res.json()).text;
    if (typeof text !== "string") throw new Error("render: no text");
  } catch {
    showMessage(ctx.t("module_failed"));
    return;
  }
  insertText(text);
  search.value = "";
  results.replaceChildren();
  saveDraft();
}

// Inserts at the caret (kept by the textarea while it is not focused); at the
// end when the agent never was in the textarea.
function insertText(text) {
  const start = bodyFocused ? body.selectionStart : body.value.length;
  const end = bodyFocused ? body.selectionEnd : body.value.length;
  body.focus();
  body.setRangeText(text, start, end, "end");
  body.dispatchEvent(new Event("input", { bubbles: true }));
}

function closeModules() {
  clearTimeout(searchTimer);
  searchAbort?.abort();
  results.replaceChildren();
  body.focus();
}

function openModulesOnColons() {
  if (!search) return;
  const pos = body.selectionStart;
  if (pos !== body.selectionEnd || pos < 2 || body.value.slice(pos - 2, pos) !== "::") return;
  body.setRangeText("", pos - 2, pos, "end");
  search.focus();
  search.select();
  if (search.value.trim()) findModules();
}

// ---- SMS counter ------------------------------------------------------------------

let smsElement = null;

function initSms() {
  smsElement = document.getElementById("sms-count");
  updateSms();
}

function updateSms() {
  if (!smsElement) return;
  const { chars, parts } = smsCount(body.value);
  smsElement.textContent = ctx.t("sms_count", { chars, parts });
}

// ---- send (with undo) -------------------------------------------------------------

let sendStatus;
let countdown = 0;
let pending = false;

function initSend() {
  sendStatus = statusElement("send-status", sendButton);
  form.addEventListener("submit", (e) => {
    if (submitted || pending) {
      e.preventDefault();
      return;
    }
    const tooLarge = oversizedFile();
    if (tooLarge) {
      // Refused here, before anything is sent: the text stays as it is.
      e.preventDefault();
      sendStatus.textContent = ctx.t("file_too_large", { name: tooLarge.name });
      return;
    }
    const seconds = parseInt(form.dataset.undoSeconds || "0", 10);
    if (seconds > 0) {
      e.preventDefault();
      startUndo(seconds);
      return;
    }
    beforeSend();
    // Later, not now: a disabled submitter would drop out of this submission.
    setTimeout(() => sendButton && (sendButton.disabled = true));
  });
  window.addEventListener("pageshow", (e) => {
    // Back to a page whose message already went: its request id is spent and
    // its draft gone, so show the ticket as it is now.
    if (e.persisted && submitted) location.reload();
  });
}

/** The first chosen file over the server's limit, if any. */
function oversizedFile() {
  const max = parseInt(form.dataset.maxAttachmentBytes || "0", 10);
  const input = form.querySelector("input[type=file]");
  if (!max || !input) return null;
  return [...input.files].find((f) => f.size > max) || null;
}

function beforeSend() {
  submitted = true;
  clearTimeout(draftTimer);
}

/** How long after Send a click on Undo is taken for the second half of a double click. */
const UNDO_ARM_MS = 600;

function startUndo(seconds) {
  pending = true;
  const hadFocus = document.activeElement === sendButton;
  if (sendButton) sendButton.disabled = true;

  // The catalogue text may end with the undo word ("Sending in 5 s – Undo");
  // that part becomes the button, so it is not shown twice.
  const word = ctx.t("undo");
  const label = document.createElement("span");
  const undo = document.createElement("button");
  undo.type = "button";
  undo.className = "undo";
  undo.textContent = word;
  // A double click on Send must not land its second click on Undo (which may appear
  // under the pointer): clicks in the first moments after Send are not an undo.
  const armedAt = performance.now() + UNDO_ARM_MS;
  undo.addEventListener("click", () => {
    if (performance.now() >= armedAt) cancelUndo();
  });
  const render = (left) => {
    const text = ctx.t("send_undo", { seconds: left });
    const cut = text.endsWith(word) ? text.slice(0, text.length - word.length) : `${text} `;
    label.textContent = cut;
  };
  render(seconds);
  sendStatus.replaceChildren(label, undo);
  if (hadFocus) undo.focus();

  let left = seconds;
  countdown = setInterval(() => {
    left -= 1;
    if (left > 0) {
      render(left);
      return;
    }
    clearInterval(countdown);
    pending = false;
    beforeSend();
    sendStatus.textContent = ctx.t("sending");
    form.submit();
  }, 1000);
}

function cancelUndo() {
  clearInterval(countdown);
  pending = false;
  sendStatus.textContent = "";
  if (sendButton) sendButton.disabled = false;
  body.focus();
}
