// Reading the fleet through the admin API, in the shapes the pages use. Endpoints that a
// control plane may not have (an older version) resolve to null instead of failing the page.

import { api, optional } from "./api.js";

const DEVICE_PAGE = 1000; // the largest page GET /fleet/devices serves
export const DEVICE_CAP = 20000; // the console lists at most this many devices

function deviceRow(row) {
  return {
    serial: row.serial,
    model: row.model,
    status: row.status,
    enrolled_at: row.enrolled_at,
    last_seen_at: row.last_seen_at,
    firmware: row.firmware ?? null,
    slot: row.boot_slot ?? null,
    slot_state: row.slot_state ?? null,
    agent_version: row.agent_version ?? null,
    update_hold: Boolean(row.update_hold),
    groups: row.groups || [],
    tags: row.tags || [],
  };
}

/** Every device (up to DEVICE_CAP) with its inventory summary, tags and groups:
 * {devices, total}. Pages are fetched in parallel, four at a time. */
export async function listDevices() {
  const first = await api("/fleet/devices", { params: { limit: DEVICE_PAGE } });
  const rows = [...first.devices];
  const offsets = [];
  for (let at = DEVICE_PAGE; at < Math.min(first.total, DEVICE_CAP); at += DEVICE_PAGE) offsets.push(at);
  for (let i = 0; i < offsets.length; i += 4) {
    const pages = await Promise.all(
      offsets.slice(i, i + 4).map((offset) => api("/fleet/devices", { params: { limit: DEVICE_PAGE, offset } })),
    );
    for (const page of pages) rows.push(...page.devices);
  }
  return { devices: rows.map(deviceRow), total: first.total };
}

/** Identity status of every device (one request): for the overview's totals. */
export async function deviceStatuses() {
  return api("/devices", { params: { limit: 10000 } });
}

/** Every group: {name, kind, filter, priority, window, members, ...}. */
export async function listGroups() {
  return api("/groups");
}

/** The fleet update level: {groups: [{group, total, on_target, updating, failed, not_reached}]}. */
export async function fleetLevel() {
  const level = await optional("/fleet/level", null);
  if (level === null) return null;
  const groups = (Array.isArray(level) ? level : level.groups || []).map((g) => {
    const counts = g.counts || g;
    return {
      group: g.group ?? g.name ?? "",
      target: g.target ?? g.release ?? null,
      total: g.total ?? g.members ?? sum(counts),
      on_target: counts.on_target ?? 0,
      updating: counts.updating ?? 0,
      failed: counts.failed ?? 0,
      not_reached: counts.not_reached ?? 0,
      proof: g.proof ?? null,
    };
  });
  return { groups, raw: level };
}

function sum(c) {
  return (c.on_target || 0) + (c.updating || 0) + (c.failed || 0) + (c.not_reached || 0);
}

/** Campaigns (newest first), or null where the control plane has no campaigns API. */
export async function listCampaigns() {
  const campaigns = await optional("/campaigns", null);
  if (campaigns === null) return null;
  const rows = Array.isArray(campaigns) ? campaigns : campaigns.campaigns || [];
  return rows.map(campaignSummary).sort((a, b) => b.id - a.id);
}

const DONE = new Set(["succeeded", "failed", "rolled-back", "excluded", "reverted"]);

/** A campaign's headline numbers, whatever the exact shape of its counts. */
export function campaignSummary(c) {
  const counts = c.counts || c.totals || {};
  const total = c.total ?? c.devices_total ?? sum2(counts);
  const succeeded = counts.succeeded ?? c.succeeded ?? 0;
  const failed = (counts.failed ?? c.failed ?? 0) + (counts["rolled-back"] ?? counts.rolled_back ?? 0);
  const active =
    (counts.assigned ?? 0) +
    (counts.downloading ?? 0) +
    (counts.downloaded ?? 0) +
    (counts.installing ?? 0) +
    (counts.reverting ?? 0);
  const excluded = counts.excluded ?? 0;
  return {
    ...c,
    group: groupName(c),
    release: releaseName(c),
    total,
    succeeded,
    failed,
    active,
    excluded,
    done: Object.entries(counts).reduce((n, [k, v]) => (DONE.has(k) ? n + v : n), 0),
  };
}

function sum2(counts) {
  return Object.values(counts).reduce((n, v) => n + (typeof v === "number" ? v : 0), 0);
}

export function groupName(c) {
  if (typeof c.group === "string") return c.group;
  if (c.group && c.group.name) return c.group.name;
  return c.group_name ?? (c.group_id !== undefined ? `group ${c.group_id}` : "—");
}

export function releaseName(c) {
  const r = c.release;
  if (typeof r === "string") return r;
  if (r && r.name) return r.version ? `${r.name} ${r.version}` : r.name;
  if (c.release_name) return c.release_version ? `${c.release_name} ${c.release_version}` : c.release_name;
  return c.release_id !== undefined ? `release ${c.release_id}` : "—";
}

export const RUNNING = new Set(["running", "paused", "halted"]);
