// One campaign: live progress per phase and per device (polled every 2 seconds), and the
// pause / resume / abort controls, shown only to principals that may manage campaigns (the
// server refuses the others anyway).

import { api } from "./api.js";
import { LIVE_CAMPAIGN, campaignSummary } from "./data.js";
import { campaignProgress } from "./overview.js";
import {
  ago,
  banner,
  card,
  chip,
  confirmDialog,
  empty,
  fill,
  fmtNumber,
  fmtTime,
  h,
  icon,
  kv,
  stackBar,
  table,
  toast,
} from "./ui.js";

const PAGE = 100;
const MOVING = ["assigned", "downloading", "downloaded", "installing", "reverting"];
const FAILED = ["failed", "rolled-back"];
const DEVICE_STATES = [
  "pending",
  "assigned",
  "downloading",
  "downloaded",
  "installing",
  "succeeded",
  "failed",
  "rolled-back",
  "excluded",
  "reverting",
  "reverted",
];

function sum(states, names) {
  return names.reduce((n, s) => n + (states[s] || 0), 0);
}

function title(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function phaseRow(phase, campaignState) {
  const states = phase.states || {};
  const done = states.succeeded || 0;
  const moving = sum(states, MOVING);
  const failed = sum(states, FAILED);
  const current = phase.status === "current";
  const status = phase.status === "done" ? "completed" : current ? campaignState : "upcoming";
  const over = failed > phase.allowed_failures;
  return h(
    "div",
    { class: current ? "phase current" : "phase", "data-phase": String(phase.index) },
    h("div", { class: "phase-name" }, title(phase.name)),
    h("div", {}, chip(status)),
    stackBar(
      [
        { value: done, tone: "ok", label: "updated" },
        { value: moving, tone: "info", label: "in progress" },
        { value: failed, tone: "bad", label: "failed" },
        { value: Math.max(0, phase.size - done - moving - failed), tone: "idle", label: "waiting" },
      ],
      "thin",
    ),
    h(
      "div",
      { class: "phase-text" },
      h("b", {}, `${fmtNumber(done)}/${fmtNumber(phase.size)}`),
      " updated",
      moving ? ` · ${fmtNumber(moving)} updating` : "",
      " · ",
      h(
        "span",
        { class: over ? "over" : null, title: `${phase.allowed_failures} failures allowed in this phase` },
        `failures ${fmtNumber(failed)}/${fmtNumber(phase.allowed_failures)}`,
      ),
    ),
  );
}

function planText(plan) {
  const parts = [`canary ${plan.canary}`, `waves ${plan.waves.map((w) => `${w}%`).join(" → ")}`];
  parts.push(`${plan.max_per_minute} devices/min`);
  parts.push(`threshold ${plan.failure_threshold}`);
  if (plan.soak_minutes) parts.push(`soak ${plan.soak_minutes} min`);
  return parts.join(" · ");
}

const DEVICE_COLUMNS = [
  { label: "Device", render: (d) => h("span", { class: "mono" }, d.serial) },
  { label: "Model", render: (d) => d.model },
  { label: "Phase", render: (d) => (d.phase_name ? title(d.phase_name) : "—") },
  { label: "State", render: (d) => chip(d.state) },
  { label: "From", render: (d) => d.from_version },
  { label: "Updated", render: (d) => ago(d.updated_at), cls: "nowrap" },
  { label: "Detail", render: (d) => (d.detail ? h("span", { class: "muted" }, d.detail) : h("span")) },
];

const NOTICES = {
  halted: ["bad", "alert", "Halted automatically", "A phase exceeded its failure threshold. Look at the failed devices, then resume or abort."],
  paused: ["warn", "pause", "Paused", "No device starts until the campaign is resumed; installs already under way finish."],
  aborted: ["warn", "stop", "Aborted", "No further device is updated."],
  completed: ["ok", "check", "Completed", "Every device of the group the release fits was reached."],
};

export async function render(ctx) {
  const id = ctx.params[0];
  ctx.crumbs([["Campaigns", "#/campaigns"], `Campaign #${id}`]);
  const canManage = ctx.can("campaigns.manage");
  const head = h("div", { class: "page-head" });
  const notice = h("div");
  const summary = h("div");
  const devicesBody = h("div");
  const pager = h("div", { class: "pager" });
  const stateFilter = h(
    "select",
    { class: "select", "aria-label": "Device state", name: "state" },
    h("option", { value: "" }, "All states"),
    DEVICE_STATES.map((s) => h("option", { value: s }, s)),
  );
  const deviceCount = h("span", { class: "count" });
  let latest = null;
  let page = 0;
  let busy = false;

  async function act(action, body, done) {
    busy = true;
    try {
      await api(`/campaigns/${id}/${action}`, { method: "POST", body });
      toast(done, "ok");
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
      text: "No new device starts. Devices already installing finish their install; devices assigned but not yet started go back to waiting.",
      confirmLabel: "Pause campaign",
    });
    if (ok) await act("pause", undefined, "Campaign paused");
  }

  async function resume() {
    const halted = latest && latest.state === "halted";
    const ok = await confirmDialog({
      title: halted ? "Resume a halted campaign?" : "Resume this campaign?",
      text: halted
        ? "It halted because a phase exceeded its failure threshold. Resuming counts the phase's failures anew from now."
        : "Devices start again at the campaign's rate.",
      confirmLabel: "Resume campaign",
    });
    if (ok) await act("resume", undefined, "Campaign resumed");
  }

  async function abort() {
    const box = h("input", { type: "checkbox", id: "abort-rollback", name: "rollback" });
    box.checked = Boolean(latest && latest.plan.rollback_on_abort);
    const confirmed = await confirmDialog({
      title: "Abort this campaign?",
      text: "No further device is updated. An aborted campaign cannot be resumed.",
      confirmLabel: "Abort campaign",
      danger: true,
      extra: h(
        "label",
        { class: "check", for: "abort-rollback" },
        box,
        h(
          "span",
          {},
          h("strong", {}, "Send updated devices back"),
          h("span", { class: "sub" }, "Devices this campaign updated return to the version they ran before, and hold there."),
        ),
      ),
    });
    if (confirmed) {
      const rollback = box.checked;
      await act("abort", { rollback }, rollback ? "Campaign aborted; updated devices are sent back" : "Campaign aborted");
    }
  }

  function controls(c) {
    if (!canManage) return null;
    const buttons = [];
    if (c.state === "running") {
      buttons.push(h("button", { type: "button", class: "btn warn", "data-action": "pause", onclick: pause }, icon("pause", "sm"), "Pause"));
    }
    if (c.state === "paused" || c.state === "halted") {
      buttons.push(h("button", { type: "button", class: "btn primary", "data-action": "resume", onclick: resume }, icon("play", "sm"), "Resume"));
    }
    if (LIVE_CAMPAIGN.has(c.state)) {
      buttons.push(h("button", { type: "button", class: "btn danger", "data-action": "abort", onclick: abort }, icon("stop", "sm"), "Abort"));
    }
    return buttons.length ? h("div", { class: "actions" }, buttons) : null;
  }

  function drawDevices(detail) {
    const pages = Math.max(1, Math.ceil(detail.devices_total / PAGE));
    deviceCount.textContent = stateFilter.value
      ? `${fmtNumber(detail.devices_total)} ${stateFilter.value} of ${fmtNumber(detail.members)}`
      : `${fmtNumber(detail.devices_total)} devices`;
    fill(
      devicesBody,
      table(DEVICE_COLUMNS, detail.devices, {
        href: (d) => `#/devices/${encodeURIComponent(d.serial)}`,
        empty: empty(
          "devices",
          stateFilter.value ? `No device is ${stateFilter.value}` : "No devices in this campaign",
          stateFilter.value ? "Choose another state." : "The group had no member when the campaign started.",
        ),
      }),
    );
    const prev = h("button", { type: "button", class: "btn sm", disabled: page === 0, "aria-label": "Previous page" }, icon("left", "sm"));
    const next = h("button", { type: "button", class: "btn sm", disabled: page >= pages - 1, "aria-label": "Next page" }, icon("right", "sm"));
    prev.addEventListener("click", () => {
      page -= 1;
      refresh().catch(toast);
    });
    next.addEventListener("click", () => {
      page += 1;
      refresh().catch(toast);
    });
    pager.hidden = pages <= 1;
    fill(pager, `Page ${page + 1} of ${pages}`, prev, next);
  }

  function draw(detail) {
    const c = campaignSummary(detail);
    latest = c;
    const by = c.created_by.replace(/^principal:/, "");
    fill(
      head,
      h(
        "div",
        { class: "titles" },
        h("h1", {}, c.name, h("span", { "data-state": c.state }, chip(c.state))),
        h("p", { class: "sub" }, `${c.releaseLabel} → group ${c.group} · started `, ago(c.created_at), ` by ${by}`),
      ),
      controls(c),
    );
    const shown = NOTICES[c.state];
    fill(notice, shown ? banner(shown[0], shown[1], shown[2], c.reason || shown[3]) : null);
    fill(
      summary,
      h(
        "div",
        { class: "grid wide-left" },
        card(
          "Progress",
          h(
            "div",
            { class: "grid progress-body" },
            campaignProgress(c),
            h(
              "div",
              { class: "phase-counts totals" },
              h("span", {}, h("b", { "data-count": "succeeded" }, fmtNumber(c.succeeded)), "updated"),
              h("span", {}, h("b", { "data-count": "active" }, fmtNumber(c.active)), "in progress"),
              h("span", {}, h("b", { "data-count": "failed" }, fmtNumber(c.failed)), "failed"),
              h("span", {}, h("b", { "data-count": "pending" }, fmtNumber(c.pending)), "waiting"),
            ),
            h("div", { class: "phases" }, detail.phase_progress.map((p) => phaseRow(p, c.state))),
          ),
          { note: c.state === "completed" ? "all phases done" : `${c.phase_name}, phase ${c.phase + 1} of ${c.phases}` },
        ),
        card(
          "Plan",
          kv([
            ["Release", h("span", {}, h("strong", {}, c.releaseLabel), h("span", { class: "sub mono" }, c.release.target))],
            ["Group", h("a", { href: `#/devices?group=${encodeURIComponent(c.group)}` }, c.group)],
            ["Plan", planText(c.plan)],
            ["On abort", c.plan.rollback_on_abort ? "send updated devices back" : "leave updated devices"],
            ["Skipped", c.excluded ? `${fmtNumber(c.excluded)} devices (pinned, or another hardware model)` : "none"],
            ["Started", fmtTime(c.created_at)],
          ]),
        ),
      ),
    );
    drawDevices(detail);
  }

  async function refresh() {
    if (busy) return;
    const detail = await api(`/campaigns/${id}`, {
      params: { state: stateFilter.value, limit: PAGE, offset: page * PAGE },
    });
    if (ctx.alive) draw(detail);
  }

  stateFilter.addEventListener("change", () => {
    page = 0;
    refresh().catch(toast);
  });
  await refresh();
  ctx.every(2000, refresh);

  return h(
    "div",
    { class: "grid", "data-page": "campaign", "data-campaign": id },
    head,
    notice,
    summary,
    h(
      "section",
      { class: "card" },
      h("header", { class: "card-head" }, h("h2", {}, "Devices"), stateFilter, deviceCount),
      devicesBody,
      pager,
    ),
  );
}
