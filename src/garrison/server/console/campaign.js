// One campaign: live progress per phase and per device (polled every 2 seconds), and the
// pause / resume / abort controls for principals that may manage campaigns.

import { api } from "./api.js";
import { campaignSummary } from "./data.js";
import { ago, banner, card, chip, empty, fill, fmtNumber, fmtTime, h, icon, kv, percent, stackBar, table, toast, confirmDialog } from "./ui.js";

const IN_PROGRESS = ["assigned", "downloading", "downloaded", "installing", "reverting"];
const FAILED = ["failed", "rolled-back"];

function count(counts, states) {
  return states.reduce((n, s) => n + (counts[s] || 0), 0);
}

function phaseLabel(index) {
  return index === 0 ? "Canary" : `Wave ${index}`;
}

function phaseCard(phase, index, current, state) {
  const counts = phase.counts || {};
  const size = phase.size ?? phase.target ?? phase.planned ?? count(counts, Object.keys(counts));
  const done = counts.succeeded || 0;
  const moving = count(counts, IN_PROGRESS);
  const failed = count(counts, FAILED);
  const isCurrent = index === current && ["running", "paused", "halted"].includes(state);
  const status = index < current || state === "completed" ? "completed" : isCurrent ? state : "pending";
  return h(
    "div",
    { class: isCurrent ? "phase current" : "phase", "data-phase": String(index) },
    h("div", { class: "phase-head" }, h("h3", {}, phase.name || phaseLabel(index)), chip(status)),
    stackBar([
      { value: done, tone: "ok", label: "succeeded" },
      { value: moving, tone: "info", label: "in progress" },
      { value: failed, tone: "bad", label: "failed" },
      { value: Math.max(0, size - done - moving - failed), tone: "idle", label: "waiting" },
    ], "thin"),
    h(
      "div",
      { class: "phase-counts" },
      h("span", {}, h("b", {}, fmtNumber(size)), "devices"),
      h("span", {}, h("b", {}, fmtNumber(done)), "updated"),
      h("span", {}, h("b", {}, fmtNumber(moving)), "updating"),
      h("span", {}, h("b", {}, fmtNumber(failed)), "failed"),
    ),
    phase.threshold !== undefined ? h("div", { class: "progress-label" }, `failure threshold ${phase.threshold}`) : null,
  );
}

function planText(plan) {
  if (!plan) return null;
  const parts = [`canary ${plan.canary}`];
  if (plan.waves) parts.push(`waves ${plan.waves.map((w) => `${w}%`).join(" → ")}`);
  if (plan.max_per_minute) parts.push(`${plan.max_per_minute}/min`);
  if (plan.failure_threshold !== undefined) parts.push(`threshold ${plan.failure_threshold}`);
  if (plan.soak_minutes) parts.push(`soak ${plan.soak_minutes} min`);
  return parts.join(" · ");
}

const DEVICE_COLUMNS = [
  { label: "Device", render: (d) => h("span", { class: "mono" }, d.serial) },
  { label: "Phase", render: (d) => (d.phase === null || d.phase === undefined ? "—" : phaseLabel(d.phase)) },
  { label: "State", render: (d) => chip(d.state) },
  { label: "From", render: (d) => d.from_version },
  { label: "Updated", render: (d) => ago(d.updated_at), cls: "nowrap" },
  { label: "Detail", render: (d) => (d.detail ? h("span", { class: "muted" }, d.detail) : "") },
];

export async function render(ctx) {
  const id = ctx.params[0];
  ctx.crumbs([["Campaigns", "#/campaigns"], `Campaign #${id}`]);
  const canManage = ctx.can("campaigns.manage");
  const head = h("div", { class: "page-head" });
  const notice = h("div");
  const summary = h("div");
  const phases = h("div");
  const devicesBody = h("div");
  const stateFilter = h("select", { class: "select", "aria-label": "Device state", name: "state" }, h("option", { value: "" }, "All states"));
  const deviceSearch = h("input", { class: "input", type: "search", placeholder: "Search serial…", "aria-label": "Search devices" });
  const deviceCount = h("span", { class: "count" });
  let latest = null;
  let busy = false;

  async function act(action, body) {
    busy = true;
    try {
      await api(`/campaigns/${id}/${action}`, { method: "POST", body });
      toast(`Campaign ${action === "abort" ? "aborted" : action === "pause" ? "paused" : "resumed"}`, "ok");
    } catch (error) {
      toast(error);
    } finally {
      busy = false;
      await refresh().catch(toast);
    }
  }

  async function pause() {
    const ok = await confirmDialog({
      title: "Pause this campaign?",
      text: "No new device starts. Devices already installing finish their install; devices assigned but not started go back to waiting.",
      confirmLabel: "Pause campaign",
    });
    if (ok) await act("pause");
  }

  async function resume() {
    const halted = latest && latest.state === "halted";
    const ok = await confirmDialog({
      title: halted ? "Resume a halted campaign?" : "Resume this campaign?",
      text: halted
        ? "The campaign halted because a phase exceeded its failure threshold. Resuming counts failures anew from now."
        : "Devices start again at the campaign's rate.",
      confirmLabel: "Resume campaign",
    });
    if (ok) await act("resume");
  }

  async function abort() {
    const box = h("input", { type: "checkbox", id: "abort-rollback", name: "rollback" });
    box.checked = Boolean(latest && latest.plan && latest.plan.rollback_on_abort);
    const dialog = await confirmDialog({
      title: "Abort this campaign?",
      text: "No further device is updated. An aborted campaign cannot be resumed.",
      confirmLabel: "Abort campaign",
      danger: true,
      extra: h(
        "label",
        { class: "check", for: "abort-rollback" },
        box,
        h("span", {}, h("strong", {}, "Send updated devices back"), h("span", { class: "sub muted" }, " to the version they ran before this campaign.")),
      ),
    });
    if (dialog) await act("abort", { rollback: box.checked });
  }

  function controls(c) {
    if (!canManage) return null;
    const state = c.state;
    const buttons = [];
    if (state === "running") {
      buttons.push(h("button", { type: "button", class: "btn warn", "data-action": "pause", onclick: pause }, icon("pause", "sm"), "Pause"));
    }
    if (state === "paused" || state === "halted") {
      buttons.push(h("button", { type: "button", class: "btn primary", "data-action": "resume", onclick: resume }, icon("play", "sm"), "Resume"));
    }
    if (["running", "paused", "halted"].includes(state)) {
      buttons.push(h("button", { type: "button", class: "btn danger", "data-action": "abort", onclick: abort }, icon("stop", "sm"), "Abort"));
    }
    return buttons.length ? h("div", { class: "actions" }, buttons) : null;
  }

  function drawDevices() {
    if (!latest) return;
    const devices = latest.devices || [];
    const text = deviceSearch.value.trim().toLowerCase();
    const shown = devices.filter(
      (d) => (!stateFilter.value || d.state === stateFilter.value) && (!text || d.serial.toLowerCase().includes(text)),
    );
    deviceCount.textContent = `${fmtNumber(shown.length)} of ${fmtNumber(devices.length)} devices`;
    fill(
      devicesBody,
      table(DEVICE_COLUMNS, shown.slice(0, 500), {
        href: (d) => `#/devices/${encodeURIComponent(d.serial)}`,
        empty: empty("devices", devices.length ? "No device matches" : "No devices in this campaign", devices.length ? "Change the filter." : "The group had no eligible member."),
      }),
    );
  }

  function draw(raw) {
    const c = campaignSummary(raw);
    latest = c;
    const states = [...new Set((c.devices || []).map((d) => d.state))].sort();
    const keep = stateFilter.value;
    fill(stateFilter, h("option", { value: "" }, "All states"), states.map((s) => h("option", { value: s }, s)));
    stateFilter.value = states.includes(keep) ? keep : "";
    fill(
      head,
      h(
        "div",
        { class: "titles" },
        h("h1", {}, c.name, chip(c.state)),
        h("p", { class: "sub" }, `${c.release} → group ${c.group} · started `, ago(c.created_at), c.created_by ? ` by ${c.created_by}` : ""),
      ),
      controls(c),
    );
    fill(
      notice,
      c.state === "halted"
        ? banner("bad", "alert", "Halted automatically", c.reason || "A phase exceeded its failure threshold. Look at the failed devices, then resume or abort.")
        : c.state === "aborted"
          ? banner("warn", "stop", "Aborted", c.reason || "No further device is updated.")
          : c.state === "paused"
            ? banner("warn", "pause", "Paused", c.reason || "No new device starts until the campaign is resumed.")
            : c.state === "completed"
              ? banner("ok", "check", "Completed", "Every eligible device of the group was reached.")
              : null,
    );
    const eligible = c.total - c.excluded;
    fill(
      summary,
      h(
        "div",
        { class: "grid wide-left" },
        card(
          "Progress",
          h(
            "div",
            { class: "grid" },
            stackBar([
              { value: c.succeeded, tone: "ok", label: "succeeded" },
              { value: c.active, tone: "info", label: "in progress" },
              { value: c.failed, tone: "bad", label: "failed or rolled back" },
              { value: Math.max(0, eligible - c.succeeded - c.active - c.failed), tone: "idle", label: "waiting" },
            ]),
            h(
              "div",
              { class: "phase-counts" },
              h("span", {}, h("b", { "data-count": "succeeded" }, fmtNumber(c.succeeded)), "updated"),
              h("span", {}, h("b", {}, fmtNumber(c.active)), "in progress"),
              h("span", {}, h("b", {}, fmtNumber(c.failed)), "failed"),
              h("span", {}, h("b", {}, `${percent(c.succeeded, eligible)} %`), `of ${fmtNumber(eligible)}`),
            ),
          ),
        ),
        card(
          "Plan",
          kv([
            ["Release", c.release],
            ["Group", h("a", { href: `#/devices?group=${encodeURIComponent(c.group)}` }, c.group)],
            ["Plan", planText(c.plan)],
            ["Excluded", c.excluded ? `${fmtNumber(c.excluded)} devices (pinned or other hardware)` : "none"],
            ["Started", fmtTime(c.created_at)],
          ]),
        ),
      ),
    );
    const phaseList = c.phases || [];
    fill(
      phases,
      phaseList.length
        ? card("Phases", h("div", { class: "phases" }, phaseList.map((p, i) => phaseCard(p, i, c.phase, c.state))))
        : null,
    );
    drawDevices();
  }

  async function refresh() {
    if (busy) return;
    const data = await api(`/campaigns/${id}`);
    if (ctx.alive) draw(data);
  }

  stateFilter.addEventListener("change", drawDevices);
  deviceSearch.addEventListener("input", drawDevices);
  await refresh();
  ctx.every(2000, refresh);

  return h(
    "div",
    { class: "grid", "data-page": "campaign", "data-campaign": id },
    head,
    notice,
    summary,
    phases,
    h(
      "section",
      { class: "card" },
      h("header", { class: "card-head" }, h("h2", {}, "Devices")),
      h("div", { class: "toolbar" }, h("div", { class: "search" }, icon("search", "sm"), deviceSearch), stateFilter, deviceCount),
      devicesBody,
    ),
  );
}
