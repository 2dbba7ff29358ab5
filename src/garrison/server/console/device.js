// One device: identity (certificates), inventory (firmware, slot, apps, agent, uptime), tags,
// groups, desired state and history. Refreshes every 5 seconds while shown.

import { api, optional } from "./api.js";
import { ago, card, chip, empty, fill, fmtDuration, fmtTime, h, kv, table, tone } from "./ui.js";

async function load(serial) {
  const path = `/devices/${encodeURIComponent(serial)}/detail`;
  const detail = await optional(path, null);
  if (detail !== null) return detail;
  // An older control plane: the identity listing is all there is.
  const rows = await api("/devices", { params: { limit: 10000 } });
  const row = rows.find((d) => d.serial === serial);
  if (!row) {
    const error = new Error(`unknown device ${serial}`);
    error.status = 404;
    throw error;
  }
  return { device: row };
}

function identityCard(d) {
  const identity = d.identity || d.device || d;
  const certs = d.certificates || identity.certificates || [];
  const current = certs.find((c) => c.serial === identity.current_cert || c.serial_hex === identity.current_cert);
  const pairs = [
    ["Status", chip(identity.status)],
    ["Model", identity.model],
    ["Enrolled", fmtTime(identity.enrolled_at)],
    ["Last seen", ago(identity.last_seen_at)],
    ["Certificate", identity.current_cert ? h("span", { class: "mono" }, identity.current_cert) : null],
    ["Valid from", current ? fmtTime(current.not_before) : undefined],
    ["Valid until", fmtTime(current ? current.not_after : identity.cert_not_after)],
  ];
  if (identity.update_hold !== undefined) {
    pairs.push(["Update hold", identity.update_hold ? chip("hold", "held after a rollback") : "none"]);
  }
  const body = [kv(pairs)];
  if (certs.length > 1) {
    body.push(
      h("h3", { class: "muted", "data-section": "certificates" }, "Certificates"),
      table(
        [
          { label: "Serial", render: (c) => h("span", { class: "mono" }, c.serial ?? c.serial_hex) },
          { label: "Valid until", render: (c) => fmtTime(c.not_after), cls: "nowrap" },
          { label: "Status", render: (c) => chip(c.status) },
        ],
        certs,
        { wrapClass: "short" },
      ),
    );
  }
  return card("Identity", body);
}

function inventoryCard(d) {
  const inv = d.inventory;
  if (!inv) {
    return card("Inventory", empty("inbox", "No inventory reported", "The device has not sent an inventory with a check-in yet."));
  }
  const boot = inv.boot || {};
  const last = inv.last_update || null;
  const slot = boot.slot ?? inv.boot_slot;
  const state = boot.state ?? inv.slot_state;
  return card(
    "Inventory",
    kv([
      ["Firmware", inv.firmware ? h("strong", {}, inv.firmware) : null],
      ["Boot slot", slot ? h("span", {}, `slot ${slot} `, state ? chip(state) : null) : null],
      ["Last boot event", boot.last_event ?? undefined],
      ["Agent", inv.agent_version ?? d.agent_version ?? null],
      ["Uptime", inv.uptime_seconds !== undefined && inv.uptime_seconds !== null ? fmtDuration(inv.uptime_seconds) : null],
      ["Reported", ago(inv.reported_at ?? d.reported_at)],
      [
        "Last update",
        last
          ? h(
              "span",
              {},
              chip(last.outcome),
              " ",
              last.version ? `${last.version} ` : "",
              last.at ? ago(last.at) : "",
              last.event ? h("span", { class: "sub muted" }, last.event) : null,
            )
          : null,
      ],
    ]),
    { note: inv.hardware ? `hardware ${inv.hardware}` : null },
  );
}

function appsCard(d) {
  const installed = (d.inventory && d.inventory.apps) || {};
  const desired = (d.desired && d.desired.apps) || null;
  const names = [...new Set([...Object.keys(installed), ...(desired ? desired.map((a) => a.name) : [])])].sort();
  const want = new Map((desired || []).map((a) => [a.name, a]));
  const rows = names.map((name) => ({ name, installed: installed[name] ?? null, desired: want.get(name) ?? null }));
  return card(
    "Applications",
    table(
      [
        { label: "App", render: (r) => h("strong", {}, r.name) },
        { label: "Installed", render: (r) => r.installed ?? h("span", { class: "faint" }, "not installed") },
        {
          label: "Desired",
          render: (r) =>
            !desired
              ? h("span", { class: "faint" }, "not managed")
              : !r.desired || r.desired.absent || r.desired.state === "absent"
                ? h("span", { class: "faint" }, "absent")
                : r.desired.version,
        },
        {
          label: "",
          render: (r) => {
            if (!desired) return "";
            const wanted = r.desired && !r.desired.absent && r.desired.state !== "absent" ? r.desired.version : null;
            if (wanted === r.installed) return chip("ok", "converged");
            return chip("pending", wanted ? "to install" : "to remove");
          },
        },
      ],
      rows,
      { empty: empty("inbox", "No applications", "No app is installed and none is desired.") },
    ),
    { flush: true },
  );
}

function membershipCard(d) {
  const tags = d.tags || [];
  const groups = (d.groups || []).map((g) => (typeof g === "string" ? { name: g } : g));
  return card(
    "Tags and groups",
    kv([
      [
        "Tags",
        tags.length ? h("div", { class: "tags" }, tags.map((t) => h("span", { class: "tag" }, t))) : h("span", { class: "faint" }, "no tags"),
      ],
      [
        "Groups",
        groups.length
          ? h(
              "div",
              { class: "tags" },
              groups.map((g) =>
                h("a", { class: "tag", href: `#/devices?group=${encodeURIComponent(g.name)}`, title: g.kind ? `${g.kind} group` : null }, g.name),
              ),
            )
          : h("span", { class: "faint" }, "in no group"),
      ],
    ]),
  );
}

function describeFirmware(fw) {
  if (!fw) return h("span", { class: "faint" }, "none: the device stays on what it runs");
  if (typeof fw === "string") return fw;
  const name = fw.name && fw.version ? `${fw.name} ${fw.version}` : fw.version ?? fw.target ?? "";
  const source = fw.source ?? fw.from ?? (fw.campaign ? `campaign ${fw.campaign}` : null);
  return h("span", {}, h("strong", {}, name), source ? h("span", { class: "sub muted" }, `from ${source}`) : null);
}

function desiredCard(d) {
  const desired = d.desired;
  const directive = d.directive || null;
  if (!desired && !directive) {
    return card("Desired state", empty("inbox", "No desired state", "Neither the device nor any of its groups names a release."));
  }
  const fw = directive && directive.firmware ? directive.firmware : desired && desired.firmware;
  const window = (directive && directive.window) || (desired && desired.window) || null;
  return card(
    "Desired state",
    kv([
      ["Firmware", describeFirmware(fw)],
      ["Pinned", desired && desired.pinned !== undefined ? (desired.pinned ? "yes, by a device entry" : "no") : undefined],
      [
        "Window",
        window
          ? `${(window.slots || []).map((s) => `${(s.days || []).join(", ")} ${s.start} for ${s.minutes} min`).join("; ")} (${window.timezone})`
          : "always open",
      ],
      ["Directive", directive && directive.etag ? h("span", { class: "mono" }, directive.etag.slice(0, 16)) : undefined],
      ["Poll", directive && directive.poll_seconds ? `every ${fmtDuration(directive.poll_seconds)}` : undefined],
    ]),
  );
}

const HISTORY_TONES = { inventory: "", update: "info", campaign: "info", command: "warn", identity: "ok" };

function historyCard(d) {
  const history = d.history || [];
  if (!history.length) {
    return card("History", empty("clock", "No history yet", "Inventory changes, updates and campaign steps of this device appear here."));
  }
  const list = h("ol", { class: "timeline" });
  for (const entry of history) {
    const t = tone(entry.details && (entry.details.state || entry.details.outcome)) || HISTORY_TONES[entry.kind] || "";
    list.append(
      h(
        "li",
        {},
        h("span", { class: `dot ${t}` }),
        h("div", {}, h("div", { class: "what" }, entry.summary), h("div", { class: "when" }, `${entry.kind} · `, ago(entry.at))),
      ),
    );
  }
  return card("History", list, { flush: true, note: `${history.length} most recent` });
}

export async function render(ctx) {
  const serial = ctx.params[0];
  ctx.crumbs([["Devices", "#/devices"], serial]);
  const body = h("div", { class: "grid" });

  function draw(d) {
    const identity = d.identity || d.device || d;
    fill(
      body,
      h(
        "div",
        { class: "page-head" },
        h(
          "div",
          { class: "titles" },
          h("h1", {}, h("span", { class: "mono" }, serial), chip(identity.status)),
          h("p", { class: "sub" }, `${identity.model || "unknown model"} · last seen `, ago(identity.last_seen_at)),
        ),
      ),
      h("div", { class: "grid two" }, identityCard(d), inventoryCard(d)),
      h("div", { class: "grid two" }, desiredCard(d), membershipCard(d)),
      h("div", { class: "grid wide-left" }, appsCard(d), historyCard(d)),
    );
  }

  draw(await load(serial));
  ctx.every(5000, async () => {
    const d = await load(serial);
    if (ctx.alive) draw(d);
  });
  return h("div", { "data-page": "device", "data-serial": serial }, body);
}
