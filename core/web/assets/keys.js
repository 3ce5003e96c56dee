// Keyboard shortcuts of the workspace (listed in dialog#shortcuts, opened with `?`).
// Exports the inbox row selection so inbox.js (row click) and live.js (row
// refresh) keep one notion of "the selected ticket".

// Where letters are text, not shortcuts. Checkboxes and buttons are not:
// j/k must keep working after ticking a row.
const FIELD =
  "input:not([type=checkbox], [type=radio], [type=button], [type=submit], [type=reset], [type=image], [type=range], [type=color], [type=file]), " +
  "textarea, select, [contenteditable]:not([contenteditable='false'])";
// Elements whose own Enter behaviour must win over "open the selected ticket".
const ACTIVATES = "a[href], button, summary, input, select, textarea, [role=button]";

function rows() {
  return [...document.querySelectorAll("table#tickets tr.ticket")];
}

export function selectedRow() {
  return document.querySelector("table#tickets tr.ticket.selected");
}

// Marks `row` as the one selected ticket. With `focus`, the row's subject link
// gets focus too, so screen readers announce the move and Enter follows it.
export function select(row, { focus = false, scroll = true } = {}) {
  if (!row) return;
  for (const r of document.querySelectorAll("table#tickets tr.selected")) {
    if (r !== row) {
      r.classList.remove("selected");
      r.removeAttribute("aria-selected");
    }
  }
  row.classList.add("selected");
  row.setAttribute("aria-selected", "true");
  if (focus) row.querySelector("a.subject")?.focus({ preventScroll: true });
  if (scroll) row.scrollIntoView({ block: "nearest" });
}

function move(step) {
  const all = rows();
  if (!all.length) return;
  const index = all.indexOf(selectedRow());
  const next = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
  select(all[next], { focus: true });
}

function typing(el) {
  return !!el && el instanceof Element && !!el.closest(FIELD);
}

function setKind(kind) {
  const form = document.querySelector("form#composer");
  if (!form) return false;
  const select = form.querySelector("select[name=kind]");
  if (select && select.value !== kind && [...select.options].some((o) => o.value === kind)) {
    select.value = kind;
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }
  const body = form.querySelector("textarea#body");
  body?.focus();
  return !!body;
}

function submit(selector) {
  const form = document.querySelector(selector);
  if (!form) return false;
  form.requestSubmit();
  return true;
}

function focusSearch() {
  const input = document.querySelector("form#search input[name=q]");
  if (!input) return false;
  input.focus();
  input.select();
  return true;
}

function toggleHelp() {
  const dialog = document.querySelector("dialog#shortcuts");
  if (!dialog) return false;
  if (dialog.open) dialog.close();
  else dialog.showModal();
  return true;
}

function onKey(e) {
  if (e.defaultPrevented || e.isComposing) return;
  const dialog = document.querySelector("dialog#shortcuts");

  if (e.key === "Escape") {
    if (dialog?.open) {
      dialog.close();
      e.preventDefault();
    } else if (typing(document.activeElement)) {
      // Leaves the field so the single-key shortcuts work again.
      document.activeElement.blur();
    }
    return;
  }
  if (e.ctrlKey || e.altKey || e.metaKey) return;
  if (typing(e.target) || typing(document.activeElement)) return;
  if (dialog?.open && e.key !== "?") return;

  let handled = false;
  switch (e.key) {
    case "j":
      if (document.querySelector("table#tickets")) { move(1); handled = true; }
      break;
    case "k":
      if (document.querySelector("table#tickets")) { move(-1); handled = true; }
      break;
    case "Enter": {
      const active = document.activeElement;
      if (active && active !== document.body && active.closest(ACTIVATES)) break;
      const link = selectedRow()?.querySelector("a.subject");
      if (link) { link.click(); handled = true; }
      break;
    }
    case "r": handled = setKind("reply"); break;
    case "n": handled = setKind("note"); break;
    case "a": handled = submit("form#assign-me"); break;
    case "e": handled = submit("form#escalate"); break;
    case "/": handled = focusSearch(); break;
    case "?": handled = toggleHelp(); break;
  }
  // Keeps the key from being typed into the field we just focused.
  if (handled) e.preventDefault();
}

export function init() {
  document.addEventListener("keydown", onKey);
}
