// Reading the fleet through the admin API, in the shapes the pages use.

import { api } from "./api.js";

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

/** The fleet update level: {at, groups: [{group, target, campaign, members, counts, proof}], total}. */
export async function fleetLevel() {
  return api("/fleet/level");
}

/** Campaigns, newest first, with their headline numbers. */
export async function listCampaigns() {
  const rows = await api("/campaigns");
  return rows.map(campaignSummary);
}

const MOVING = ["assigned", "downloading", "downloaded", "installing", "reverting"];

/** A campaign's headline numbers from its counts by device state. */
export function campaignSummary(c) {
  const n = (state) => c.counts[state] || 0;
  const excluded = n("excluded");
  const reach = c.members - excluded; // devices the campaign is about
  const succeeded = n("succeeded");
  const active = MOVING.reduce((sum, s) => sum + n(s), 0);
  const failed = n("failed") + n("rolled-back");
  const reverted = n("reverted");
  return {
    ...c,
    releaseLabel: `${c.release.name} ${c.release.version}`,
    reach,
    succeeded,
    active,
    failed,
    reverted,
    excluded,
    pending: Math.max(0, reach - succeeded - active - failed - reverted),
  };
}

export const LIVE_CAMPAIGN = new Set(["running", "paused", "halted"]);
