// The audit log: newest first, 50 entries a page, filtered by actor, action and outcome, with
// the hash chain's verification status (GET /api/v1/audit/verify) above it.

import { api } from "./api.js";
import { banner, chip, empty, fill, fmtNumber, fmtTime, h, icon, table } from "./ui.js";

const PAGE = 50;

function brief(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 39)}…` : text;
}

function detailsCell(entry) {
  const keys = Object.keys(entry.details || {});
  if (!keys.length) return h("span", { class: "faint" }, "—");
  const reason = entry.details.reason;
  const short =
    typeof reason === "string"
      ? reason
      : keys
          .slice(0, 3)
          .map((k) => `${k}: ${brief(entry.details[k])}`)
          .join(" · ");
  return h(
    "details",
    { class: "inline" },
    h("summary", { class: "truncate" }, short),
    h("pre", { class: "json" }, JSON.stringify(entry.details, null, 2)),
  );
}

const COLUMNS = [
  { label: "#", render: (e) => h("span", { class: "num muted" }, String(e.seq)), cls: "num" },
  { label: "Time", render: (e) => fmtTime(e.at), cls: "nowrap" },
  { label: "Actor", render: (e) => h("span", { class: "mono" }, e.actor) },
  { label: "Action", render: (e) => h("strong", {}, e.action) },
  { label: "Target", render: (e) => h("span", { class: "mono truncate" }, e.target) },
  { label: "Outcome", render: (e) => chip(e.outcome) },
  { label: "Details", render: detailsCell, cls: "details" },
];

async function chainBanner() {
  try {
    const head = await api("/audit/verify");
    return banner(
      "ok",
      "shield",
      `Hash chain verified: ${fmtNumber(head.seq)} entries intact`,
      `Head ${head.entry_hash}. Every entry is chained to the one before it; an entry changed or removed in the database breaks the chain.`,
    );
  } catch (error) {
    if (error.status === 401) throw error;
    return banner("bad", "shieldOff", `Chain verification failed: ${error.message}`, error.hint || "The audit log has been altered outside the control plane.");
  }
}

export async function render(ctx) {
  ctx.crumbs(["Audit log"]);
  const q = ctx.query;
  const actor = h("input", { class: "input", name: "actor", placeholder: "Actor contains…", "aria-label": "Actor", value: q.get("actor") || "" });
  const action = h("input", { class: "input", name: "action", placeholder: "Action starts with…", "aria-label": "Action", value: q.get("action") || "" });
  const outcome = h(
    "select",
    { class: "select", name: "outcome", "aria-label": "Outcome" },
    h("option", { value: "" }, "All outcomes"),
    h("option", { value: "ok" }, "ok"),
    h("option", { value: "refused" }, "refused"),
  );
  outcome.value = ["ok", "refused"].includes(q.get("outcome")) ? q.get("outcome") : "";
  const status = h("div", {}, await chainBanner());
  const results = h("div");
  const pager = h("div", { class: "pager" });
  const pageInfo = h("span", { class: "count" });
  const cursors = [null]; // `before` of each page visited; null = newest
  let page = 0;

  async function load() {
    const params = { before: cursors[page], limit: PAGE, actor: actor.value.trim(), action: action.value.trim(), outcome: outcome.value };
    const data = await api("/audit/page", { params });
    if (!ctx.alive) return;
    cursors[page + 1] = data.next_before;
    fill(
      results,
      table(COLUMNS, data.entries, {
        empty: empty("audit", "No entry matches", "Change or clear the filters."),
      }),
    );
    const prev = h("button", { type: "button", class: "btn sm", disabled: page === 0 }, icon("left", "sm"), "Newer");
    const next = h("button", { type: "button", class: "btn sm", disabled: data.next_before === null }, "Older", icon("right", "sm"));
    prev.addEventListener("click", () => {
      page -= 1;
      load().catch(fail);
    });
    next.addEventListener("click", () => {
      page += 1;
      load().catch(fail);
    });
    const first = data.entries[0];
    const last = data.entries[data.entries.length - 1];
    pageInfo.textContent = first ? `entries ${last.seq}–${first.seq}` : "";
    fill(pager, `Page ${page + 1}`, prev, next);
  }

  function fail(error) {
    fill(results, empty("alert", error.message, error.hint));
  }

  let debounce = null;
  function filtersChanged() {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      page = 0;
      cursors.length = 1;
      ctx.setQuery({ actor: actor.value.trim(), action: action.value.trim(), outcome: outcome.value });
      load().catch(fail);
    }, 250);
  }
  actor.addEventListener("input", filtersChanged);
  action.addEventListener("input", filtersChanged);
  outcome.addEventListener("change", filtersChanged);
  ctx.onDispose(() => clearTimeout(debounce));

  await load();
  ctx.every(15000, async () => {
    fill(status, await chainBanner());
    if (page === 0) await load();
  });

  return h(
    "div",
    { class: "grid", "data-page": "audit" },
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "titles" }, h("h1", {}, "Audit log"), h("p", { class: "sub" }, "Every administrative change and every refused request, hash-chained.")),
    ),
    status,
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "toolbar" },
        h("div", { class: "search" }, icon("search", "sm"), actor),
        h("div", { class: "search" }, icon("search", "sm"), action),
        outcome,
        pageInfo,
      ),
      results,
      pager,
    ),
  );
}
