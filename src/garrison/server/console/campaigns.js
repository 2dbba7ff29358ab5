// Campaigns: the list (refreshing every 5 seconds) and the form that starts a new one.

import { api } from "./api.js";
import { campaignSummary, listGroups } from "./data.js";
import { campaignProgress } from "./overview.js";
import { ago, card, chip, empty, fill, fmtNumber, h, icon, table, toast } from "./ui.js";

const PAGE = 100; // campaigns per page (GET /campaigns serves at most 1000 at once)
const MAX_SHOWN = 1000;

const COLUMNS = [
  { label: "Campaign", render: (c) => h("span", {}, h("strong", {}, c.name), h("span", { class: "sub" }, `#${c.id} · by ${c.created_by.replace(/^principal:/, "")}`)) },
  { label: "Group", render: (c) => c.group },
  { label: "Release", render: (c) => c.releaseLabel },
  { label: "State", render: (c) => chip(c.state) },
  { label: "Phase", render: (c) => (c.state === "completed" ? "all phases done" : `${c.phase_name} (${c.phase + 1} of ${c.phases})`), cls: "nowrap" },
  { label: "Progress", render: (c) => campaignProgress(c) },
  { label: "Started", render: (c) => ago(c.created_at), cls: "nowrap" },
];

async function renderList(ctx) {
  ctx.crumbs(["Campaigns"]);
  const canManage = ctx.can("campaigns.manage");
  const newButton = canManage
    ? h("a", { class: "btn primary", href: "#/campaigns/new", "data-action": "new-campaign" }, icon("plus", "sm"), "New campaign")
    : null;
  const results = h("div");
  let shown = PAGE; // the newest campaigns first; "Show older" adds a page (up to MAX_SHOWN)

  async function refresh() {
    const rows = await api("/campaigns", { params: { limit: shown } });
    if (!ctx.alive) return;
    const campaigns = rows.map(campaignSummary);
    const more =
      rows.length === shown && shown < MAX_SHOWN
        ? h(
            "div",
            { class: "pager" },
            `The newest ${fmtNumber(rows.length)}`,
            h(
              "button",
              {
                class: "btn sm",
                type: "button",
                "data-action": "older-campaigns",
                onclick: () => {
                  shown = Math.min(MAX_SHOWN, shown + PAGE);
                  refresh();
                },
              },
              "Show older campaigns",
            ),
          )
        : null;
    fill(
      results,
      table(COLUMNS, campaigns, {
        href: (c) => `#/campaigns/${c.id}`,
        empty: empty(
          "campaigns",
          "No campaigns yet",
          "A campaign rolls a signed release out over a group: a canary first, then waves, at the pace you choose.",
          newButton && newButton.cloneNode(true),
        ),
      }),
      more,
    );
  }

  await refresh();
  ctx.every(5000, refresh);
  return h(
    "div",
    { class: "grid", "data-page": "campaigns" },
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "titles" }, h("h1", {}, "Campaigns"), h("p", { class: "sub" }, "Rollouts of signed releases over groups, phase by phase.")),
      h("div", { class: "actions" }, newButton),
    ),
    h("section", { class: "card" }, results),
  );
}

// ---- the create form ---------------------------------------------------------------------

function field(label, control, help = null, { full = false, id } = {}) {
  return h(
    "div",
    { class: full ? "field full" : "field" },
    h("label", { for: id }, label),
    control,
    help && h("div", { class: "help" }, help),
  );
}

function amount(name, value, unit) {
  const input = h("input", { class: "input", type: "number", min: "0", step: "1", id: name, name, value: String(value), required: true });
  const units = h(
    "select",
    { class: "select", name: `${name}-unit`, "aria-label": `${name} unit` },
    h("option", { value: "devices" }, "devices"),
    h("option", { value: "%" }, "%"),
  );
  units.value = unit;
  return { input, units, node: h("div", { class: "input-group" }, input, units) };
}

function readAmount(a, what) {
  const n = Number(a.input.value);
  if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) throw new Error(`${what} must be a whole number`);
  return a.units.value === "%" ? `${n}%` : n;
}

function releaseRef(r) {
  return { name: r.name, version: r.version };
}

async function renderCreate(ctx) {
  ctx.crumbs([["Campaigns", "#/campaigns"], "New campaign"]);
  const [groups, images] = await Promise.all([listGroups(), api("/campaigns/releases")]);
  const name = h("input", { class: "input", id: "name", name: "name", maxlength: "64", required: true, placeholder: "e.g. edge-gw-2 firmware 2.1.0" });
  const group = h(
    "select",
    { class: "select", id: "group", name: "group", required: true },
    h("option", { value: "" }, groups.length ? "Choose a group…" : "No groups defined"),
    groups.map((g) => h("option", { value: g.name }, `${g.name} (${g.members} ${g.members === 1 ? "device" : "devices"})`)),
  );
  if (ctx.query.get("group")) group.value = ctx.query.get("group");
  const release = h(
    "select",
    { class: "select", id: "release", name: "release", required: true },
    h("option", { value: "" }, images.length ? "Choose a published firmware release…" : "No published firmware release"),
    images.map((r) => h("option", { value: String(r.id) }, `${r.name} ${r.version} · for ${r.hardware.join(", ")}`)),
  );
  const canary = amount("canary", 1, "devices");
  const threshold = amount("threshold", 0, "devices");
  const waves = h("input", { class: "input", id: "waves", name: "waves", value: "25, 50, 100", required: true });
  const rate = h("input", { class: "input", id: "rate", name: "rate", type: "number", min: "1", step: "1", value: "60", required: true });
  const soak = h("input", { class: "input", id: "soak", name: "soak", type: "number", min: "0", step: "1", value: "0" });
  const rollback = h("input", { type: "checkbox", name: "rollback_on_abort", id: "rollback_on_abort" });
  const submit = h("button", { type: "submit", class: "btn primary", "data-action": "start-campaign" }, icon("play", "sm"), "Start campaign");
  const problems = h("div");

  const form = h(
    "form",
    { novalidate: true, "aria-label": "New campaign", "data-form": "campaign" },
    problems,
    h(
      "div",
      { class: "form-grid" },
      field("Name", name, "Shown in the console, the CLI and the audit log.", { full: true, id: "name" }),
      field("Group", group, "Its members now and any device that joins it during the rollout.", { id: "group" }),
      field("Release", release, "A published firmware image; devices of other hardware are skipped.", { id: "release" }),
      field("Canary", canary.node, "The first devices to update, alone.", { id: "canary" }),
      field("Waves", waves, "Cumulative percentages after the canary, ending at 100.", { id: "waves" }),
      field("Rate", rate, "At most this many devices start per minute.", { id: "rate" }),
      field("Failure threshold", threshold.node, "Failures allowed per phase; one more halts the campaign.", { id: "threshold" }),
      field("Soak time (minutes)", soak, "Wait between phases after a phase's last device finished.", { id: "soak" }),
      h(
        "div",
        { class: "field" },
        h("span", { class: "check" }, rollback, h("label", { for: "rollback_on_abort" }, "On abort, send updated devices back by default")),
      ),
    ),
    h("div", { class: "actions" }, submit, h("a", { class: "btn", href: "#/campaigns" }, "Cancel")),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(problems);
    let body;
    try {
      if (!name.value.trim()) throw new Error("Give the campaign a name");
      if (!group.value) throw new Error("Choose the group to update");
      if (!release.value) throw new Error("Choose the release to roll out");
      const waveList = waves.value
        .split(/[,\s]+/)
        .filter(Boolean)
        .map((w) => Number(w.replace(/%$/, "")));
      if (!waveList.length || waveList.some((w) => !Number.isFinite(w))) throw new Error("Waves are percentages such as 25, 50, 100");
      body = {
        name: name.value.trim(),
        group: group.value,
        release: releaseRef(images.find((r) => String(r.id) === release.value)),
        plan: {
          canary: readAmount(canary, "Canary"),
          waves: waveList,
          max_per_minute: Number(rate.value),
          failure_threshold: readAmount(threshold, "Failure threshold"),
          soak_minutes: Number(soak.value || 0),
          rollback_on_abort: rollback.checked,
        },
      };
    } catch (error) {
      fill(problems, h("div", { class: "banner bad", role: "alert" }, icon("alert"), h("div", { class: "text" }, h("strong", {}, error.message))));
      return;
    }
    submit.disabled = true;
    try {
      const created = await api("/campaigns", { method: "POST", body });
      toast(`Campaign “${created.name}” started`, "ok");
      window.location.hash = `#/campaigns/${created.id}`;
    } catch (error) {
      submit.disabled = false;
      fill(
        problems,
        h(
          "div",
          { class: "banner bad", role: "alert" },
          icon("alert"),
          h("div", { class: "text" }, h("strong", {}, error.message), error.hint && h("span", {}, error.hint)),
        ),
      );
      toast(error);
    }
  });

  return h(
    "div",
    { class: "grid", "data-page": "campaign-new" },
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "titles" }, h("h1", {}, "New campaign"), h("p", { class: "sub" }, "Roll a signed release out over a group, on your schedule.")),
    ),
    card(null, form, { cls: "narrow" }),
  );
}

export async function render(ctx, mode) {
  return mode === "new" ? renderCreate(ctx) : renderList(ctx);
}
