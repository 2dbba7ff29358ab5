// Fleet overview: totals, the update level of every group, and the campaigns in progress.
// Refreshes every 5 seconds while shown.

import { RUNNING, deviceStatuses, fleetLevel, listCampaigns } from "./data.js";
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
  const segments = LEVEL_SEGMENTS.map(([key, t, label]) => ({ value: g[key], tone: t, label }));
  return h(
    "div",
    { class: "level-row", "data-group": g.group },
    h(
      "div",
      { class: "level-name truncate" },
      h("a", { href: `#/devices?group=${encodeURIComponent(g.group)}` }, g.group),
      h("span", { class: "sub" }, g.target ? `target ${g.target}` : "no target set", ` · ${fmtNumber(g.total)} devices`),
    ),
    stackBar(segments),
    h(
      "div",
      { class: "level-counts" },
      LEVEL_SEGMENTS.map(([key, t, label]) =>
        h("span", { class: t, title: label }, h("b", {}, fmtNumber(g[key])), ` ${label.split(" ")[0]}`),
      ),
    ),
  );
}

function levelCard(level) {
  if (level === null) {
    return card("Update level by group", empty("campaigns", "No update level yet", "This control plane does not report update levels."), { flush: true });
  }
  const body = level.groups.length
    ? level.groups.map(levelRow)
    : empty("users", "No groups", "Create groups to see how far each one is on its target release.");
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
  const label = `${fmtNumber(c.succeeded)} of ${fmtNumber(c.total - c.excluded)} updated`;
  return h(
    "div",
    {},
    stackBar(
      [
        { value: c.succeeded, tone: "ok", label: "succeeded" },
        { value: c.active, tone: "info", label: "in progress" },
        { value: c.failed, tone: "bad", label: "failed" },
        { value: Math.max(0, c.total - c.excluded - c.succeeded - c.active - c.failed), tone: "idle", label: "pending" },
      ],
      "thin",
    ),
    h(
      "div",
      { class: "progress-label" },
      label,
      c.failed ? ` · ${fmtNumber(c.failed)} failed` : "",
      ` · ${percent(c.succeeded, c.total - c.excluded)} %`,
    ),
  );
}

function campaignsCard(campaigns, canManage) {
  const action = canManage
    ? h("a", { class: "btn sm", href: "#/campaigns/new" }, icon("plus", "sm"), "New campaign")
    : null;
  if (campaigns === null) {
    return card("Campaigns in progress", empty("campaigns", "No campaigns", "This control plane does not run campaigns."), { flush: true });
  }
  const live = campaigns.filter((c) => RUNNING.has(c.state));
  const body = live.length
    ? live.map((c) =>
        h(
          "a",
          { class: "campaign-row", href: `#/campaigns/${c.id}`, "data-campaign": c.id },
          h("div", { class: "truncate" }, h("div", { class: "name truncate" }, c.name), h("div", { class: "sub truncate" }, `${c.release} → ${c.group}`)),
          campaignProgress(c),
          chip(c.state),
        ),
      )
    : empty("campaigns", "No campaign is running", "Every group is where its operators left it.", action);
  return card("Campaigns in progress", body, { flush: true, actions: live.length ? action : null });
}

export async function render(ctx) {
  ctx.crumbs(["Fleet overview"]);
  const stats = h("div", { class: "grid stats" });
  const level = h("div");
  const running = h("div");

  async function refresh() {
    const [devices, lvl, campaigns] = await Promise.all([deviceStatuses(), fleetLevel(), listCampaigns()]);
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
