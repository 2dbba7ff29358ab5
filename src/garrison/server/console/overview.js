// Fleet overview: totals, the update level of every group, and the campaigns in progress.
// Refreshes every 5 seconds while shown.

import { api } from "./api.js";
import { LIVE_CAMPAIGN, campaignSummary, deviceStatuses, fleetLevel } from "./data.js";
import { card, chip, empty, fill, fmtNumber, h, icon, legend, percent, stackBar } from "./ui.js";

const HOUR = 3600 * 1000;

function stat(iconName, t, value, label, id) {
  return h(
    "section",
    { class: "card stat", "data-stat": id },
    h("div", { class: `stat-icon ${t}` }, icon(iconName)),
    h("div", {}, h("div", { class: "stat-value" }, fmtNumber(value)), h("div", { class: "stat-label" }, label)),
  );
}

function totals(devices) {
  const now = Date.now();
  return {
    total: devices.length,
    active: devices.filter((d) => d.status === "active").length,
    revoked: devices.filter((d) => d.status === "revoked").length,
    recent: devices.filter((d) => d.last_seen_at && now - new Date(d.last_seen_at).getTime() < HOUR)
      .length,
  };
}

const LEVEL_SEGMENTS = [
  ["on_target", "ok", "on target"],
  ["updating", "info", "updating"],
  ["failed", "bad", "failed or rolled back"],
  ["not_reached", "idle", "not reached"],
];

export function levelRow(g) {
  const counts = g.counts;
  const segments = LEVEL_SEGMENTS.map(([key, t, label]) => ({ value: counts[key] || 0, tone: t, label }));
  const proof = g.proof;
  const proven = proof.exactly_one_each && proof.classified === proof.members;
  return h(
    "div",
    { class: "level-row", "data-group": g.group },
    h(
      "div",
      { class: "level-top" },
      h(
        "div",
        { class: "level-name" },
        h("a", { href: `#/devices?group=${encodeURIComponent(g.group)}` }, g.group),
        h(
          "span",
          { class: "sub" },
          g.target ? `target ${g.target}` : "no target firmware",
          ` · ${fmtNumber(g.members)} ${g.members === 1 ? "device" : "devices"}`,
          g.campaign ? [" · ", h("a", { href: `#/campaigns/${g.campaign}` }, `campaign #${g.campaign}`)] : null,
        ),
      ),
      h(
        "div",
        { class: "level-counts" },
        LEVEL_SEGMENTS.map(([key, t, label]) =>
          h("span", { class: t, "data-level": key }, h("b", {}, fmtNumber(counts[key] || 0)), ` ${label.replace(" or rolled back", "")}`),
        ),
      ),
    ),
    stackBar(segments),
    h(
      "div",
      { class: proven ? "proof" : "proof bad", title: `SHA-256 of the classification: ${proof.digest}` },
      proven ? icon("check", "sm") : icon("alert", "sm"),
      proven
        ? `${fmtNumber(proof.classified)} of ${fmtNumber(proof.members)} devices classified, each in exactly one state`
        : `the classification does not add up: ${proof.classified} of ${proof.members}`,
    ),
  );
}

function levelCard(level) {
  const body = level.groups.length
    ? level.groups.map(levelRow)
    : empty("users", "No groups yet", "Create groups (garrison group create) to see how far each one is on its target firmware.");
  return card("Update level by group", body, {
    flush: true,
    actions: legend([
      ["ok", "On target"],
      ["info", "Updating"],
      ["bad", "Failed"],
      ["idle", "Not reached"],
    ]),
  });
}

export function campaignProgress(c) {
  return h(
    "div",
    {},
    stackBar(
      [
        { value: c.succeeded, tone: "ok", label: "updated" },
        { value: c.active, tone: "info", label: "in progress" },
        { value: c.failed, tone: "bad", label: "failed" },
        { value: c.reverted, tone: "warn", label: "sent back" },
        { value: c.pending, tone: "idle", label: "waiting" },
      ],
      "thin",
    ),
    h(
      "div",
      { class: "progress-label" },
      `${fmtNumber(c.succeeded)} of ${fmtNumber(c.reach)} updated`,
      c.failed ? ` · ${fmtNumber(c.failed)} failed` : "",
      ` · ${percent(c.succeeded, c.reach)} %`,
    ),
  );
}

/** Every running, paused or halted campaign (at most one per group), however old. */
async function liveCampaigns() {
  const rows = await api("/campaigns", { params: { state: "active", limit: 1000 } });
  return rows.map(campaignSummary);
}

function campaignsCard(campaigns, canManage) {
  const action = canManage
    ? h("a", { class: "btn sm", href: "#/campaigns/new" }, icon("plus", "sm"), "New campaign")
    : null;
  const live = campaigns.filter((c) => LIVE_CAMPAIGN.has(c.state));
  const body = live.length
    ? live.map((c) =>
        h(
          "a",
          { class: "campaign-row", href: `#/campaigns/${c.id}`, "data-campaign": c.id },
          h("div", { class: "campaign-top" }, h("span", { class: "name truncate" }, c.name), chip(c.state)),
          h("div", { class: "sub truncate" }, `${c.releaseLabel} → ${c.group} · ${c.phase_name} (${c.phase + 1} of ${c.phases})`),
          campaignProgress(c),
        ),
      )
    : empty("campaigns", "No campaign is running", "Every group stays on the firmware it runs.", action);
  return card("Campaigns in progress", body, { flush: true, actions: live.length ? action : null });
}

export async function render(ctx) {
  ctx.crumbs(["Fleet overview"]);
  const stats = h("div", { class: "grid stats" });
  const level = h("div");
  const running = h("div");

  async function refresh() {
    const [devices, lvl, campaigns] = await Promise.all([deviceStatuses(), fleetLevel(), liveCampaigns()]);
    if (!ctx.alive) return;
    const t = totals(devices);
    fill(
      stats,
      stat("devices", "brand", t.total, "Devices enrolled", "total"),
      stat("shield", "ok", t.active, "Active", "active"),
      stat("ban", t.revoked ? "bad" : "", t.revoked, "Revoked", "revoked"),
      stat("activity", "info", t.recent, "Seen in the last hour", "recent"),
    );
    fill(level, levelCard(lvl));
    fill(running, campaignsCard(campaigns, ctx.can("campaigns.manage")));
  }

  await refresh();
  ctx.every(5000, refresh);
  return h(
    "div",
    { class: "grid", "data-page": "overview" },
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "titles" }, h("h1", {}, "Fleet overview"), h("p", { class: "sub" }, ctx.me.organization)),
    ),
    stats,
    h("div", { class: "grid wide-left" }, level, running),
  );
}
