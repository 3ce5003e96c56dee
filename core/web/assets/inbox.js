// The inbox table: bulk selection, row click selection and the SLA countdown.
// Rows may be replaced by live.js at any time (it fires `pd:rows` on the
// tbody), so listeners sit on the table and state is re-read from the DOM.

let ctx;
let table, selectAll, apply, action, value;

export function init(context) {
  ctx = context;
  table = document.querySelector("table#tickets");
  if (!table) return;
  selectAll = document.getElementById("select-all");
  const bulk = document.querySelector("form#bulk");
  apply = document.getElementById("bulk-apply") || bulk?.querySelector("button[type=submit], button:not([type])");
  action = bulk?.querySelector("select[name=action]");
  value = bulk?.querySelector("input[name=value]");

  table.addEventListener("change", (e) => {
    if (e.target === selectAll) {
      for (const box of rowBoxes()) box.checked = selectAll.checked;
    }
    if (e.target.matches?.("input[name=ticket], #select-all")) syncBulk();
  });
  table.addEventListener("click", onRowClick);
  table.addEventListener("pd:rows", () => {
    syncBulk();
    updateSla();
  });
  action?.addEventListener("change", syncAction);

  syncBulk();
  syncAction();
  updateSla();
  setInterval(updateSla, 30000);
}

function rowBoxes() {
  return [...table.querySelectorAll("tbody input[name=ticket]")];
}

function syncBulk() {
  const boxes = rowBoxes();
  const checked = boxes.filter((b) => b.checked).length;
  if (selectAll) {
    selectAll.checked = checked > 0 && checked === boxes.length;
    selectAll.indeterminate = checked > 0 && checked < boxes.length;
  }
  if (apply) apply.disabled = checked === 0;
}

// "Assign to me" needs no value: hide the field and its label.
function syncAction() {
  if (!action || !value) return;
  const hide = action.value === "assign_me";
  value.hidden = hide;
  value.disabled = hide;
  for (const label of value.labels || []) {
    if (!label.contains(action)) label.hidden = hide;
  }
}

function onRowClick(e) {
  const row = e.target.closest("tr.ticket");
  if (!row || e.target.closest("a, button, input, select, textarea, label, summary")) return;
  ctx.select(row, { scroll: false });
}

// ---- SLA countdown -------------------------------------------------------------

const MINUTE = 60000;
let format = null;

function relative(ms) {
  format ??= new Intl.RelativeTimeFormat(ctx.lang || undefined, { numeric: "always", style: "short" });
  const abs = Math.abs(ms);
  const sign = ms < 0 ? -1 : 1;
  if (abs < 60 * MINUTE) return format.format(sign * Math.round(abs / MINUTE), "minute");
  if (abs < 48 * 60 * MINUTE) return format.format(sign * Math.round(abs / (60 * MINUTE)), "hour");
  return format.format(sign * Math.round(abs / (24 * 60 * MINUTE)), "day");
}

function updateSla() {
  const now = Date.now();
  for (const el of table.querySelectorAll("span.sla[data-due]")) {
    const due = Number(el.dataset.due);
    if (!Number.isFinite(due) || el.dataset.due === "") continue;
    const left = due - now;
    const text = relative(left);
    if (el.textContent !== text) el.textContent = text;
    el.classList.toggle("breached", left < 0);
    el.classList.toggle("warning", left >= 0 && left < 60 * MINUTE);
  }
}
