// One device: identity (certificates), inventory (firmware, slot, apps, agent, uptime), tags,
// groups, desired state and history. Refreshes every 5 seconds while shown.

import { api } from "./api.js";
import { ago, card, chip, empty, fill, fmtDuration, fmtTime, h, kv, table, tone } from "./ui.js";

async function load(serial) {
  const detail = await api(`/devices/${encodeURIComponent(serial)}/detail`);
  return detail;
}

function identityCard(d) {
  const identity = d.identity;
  const certs = identity.certificates || [];
  const current = certs.find((c) => c.current) || null;
  const body = [
    kv([
      ["Status", chip(identity.status)],
      ["Model", identity.model],
      ["Enrolled", fmtTime(identity.enrolled_at)],
      ["Last seen", ago(identity.last_seen_at)],
      ["Certificate", identity.current_cert ? h("span", { class: "mono", "data-field": "certificate" }, identity.current_cert) : null],
      ["Valid from", current ? fmtTime(current.not_before) : undefined],
      ["Valid until", current ? fmtTime(current.not_after) : undefined],
      ["Update hold", identity.update_hold ? chip("hold", "held after a rollback") : "none"],
    ]),
  ];
  if (certs.length > 1) {
    body.push(
      h("h3", { class: "muted section-title" }, "Certificate history"),
      table(
        [
          { label: "Serial", render: (c) => h("span", { class: "mono truncate" }, c.serial) },
          { label: "Issued", render: (c) => fmtTime(c.issued_at), cls: "nowrap" },
          { label: "Status", render: (c) => chip(c.status, c.revocation_reason ? `${c.status}: ${c.revocation_reason}` : c.status) },
        ],
        certs,
        { wrapClass: "short" },
      ),
    );
  }
  return card("Identity", body);
}

function inventoryCard(d, summary) {
  const inv = d.inventory;
  if (!inv) {
    return card("Inventory", empty("inbox", "No inventory reported", "The device has not sent an inventory with a check-in yet."));
  }
  const boot = inv.boot || {};
  const last = inv.last_update || null;
  const agent = inv.agent_version ?? (summary && summary.agent_version);
  return card(
    "Inventory",
    kv([
      ["Firmware", inv.firmware ? h("strong", { "data-field": "firmware" }, inv.firmware) : null],
      ["Boot slot", boot.slot ? h("span", {}, `slot ${boot.slot} `, boot.state ? chip(boot.state) : null) : null],
      ["Last boot event", boot.last_event ?? null],
      ["Agent", agent ?? undefined],
      ["Uptime", typeof inv.uptime_seconds === "number" ? fmtDuration(inv.uptime_seconds) : null],
      ["Reported", ago(inv.reported_at)],
      [
        "Last update",
        last
          ? h(
              "span",
              {},
              chip(last.outcome),
              last.version ? ` ${last.version} · ` : " ",
              last.at ? ago(last.at) : "",
              last.event ? h("span", { class: "sub" }, last.event) : null,
            )
          : "none reported",
      ],
    ]),
    { note: inv.hardware ? `hardware ${inv.hardware}` : null },
  );
}

function appsCard(d) {
  const installed = (d.inventory && d.inventory.apps) || {};
  const desired = d.desired && d.desired.apps ? d.desired.apps : null;
  const want = new Map((desired || []).map((a) => [a.name, a]));
  // apps whose desired release cannot be offered here: left as they are (docs/fleet.md)
  const kept = new Map(((d.directive && d.directive.kept_apps) || []).map((k) => [k.name, k.reason]));
  const names = [...new Set([...Object.keys(installed), ...want.keys()])].sort();
  const rows = names.map((name) => {
    const entry = want.get(name) || null;
    const version = entry && !entry.absent && entry.release ? entry.release.version : null;
    return { name, installed: installed[name] ?? null, entry, version };
  });
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
              : r.version
                ? h("span", {}, r.version, r.entry.from ? h("span", { class: "sub" }, `from ${r.entry.from}`) : null)
                : h("span", { class: "faint" }, "absent"),
        },
        {
          label: "",
          render: (r) => {
            if (!desired) return h("span");
            if (kept.has(r.name)) return h("span", {}, chip("hold", "kept as it is"), h("span", { class: "sub" }, kept.get(r.name)));
            if (r.version === r.installed) return chip("ok", "converged");
            return chip("pending", r.version ? "to install" : "to remove");
          },
        },
      ],
      rows,
      { empty: empty("inbox", "No applications", "No app is installed here and none is desired.") },
    ),
    { flush: true },
  );
}

function membershipCard(d) {
  const tags = d.tags || [];
  const groups = d.groups || [];
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
              { class: "tags", "data-field": "groups" },
              groups.map((g) =>
                h(
                  "a",
                  { class: "tag", href: `#/devices?group=${encodeURIComponent(g.name)}`, title: `${g.kind} group, priority ${g.priority}` },
                  g.name,
                ),
              ),
            )
          : h("span", { class: "faint" }, "in no group"),
      ],
    ]),
  );
}

function release(r) {
  return r ? `${r.name} ${r.version}` : "—";
}

function windowText(w) {
  if (!w) return "always open";
  const slots = (w.slots || []).map((s) => `${(s.days || []).join(", ")} ${s.start} for ${fmtDuration(s.minutes * 60)}`);
  return `${slots.join("; ")} (${w.timezone})`;
}

function desiredCard(d) {
  const desired = d.desired || {};
  const fw = desired.firmware;
  const campaign = desired.campaign;
  const directive = d.directive;
  let firmware;
  if (campaign && campaign.release) {
    firmware = h(
      "span",
      {},
      h("strong", {}, release(campaign.release)),
      h("span", { class: "sub" }, "from ", h("a", { href: `#/campaigns/${campaign.id}` }, `campaign #${campaign.id}`), " ", chip(campaign.state)),
    );
  } else if (fw) {
    firmware = h("span", {}, h("strong", {}, release(fw)), h("span", { class: "sub" }, `from ${fw.from}${desired.pinned ? ", pinned" : ""}`));
  } else {
    firmware = h("span", { class: "faint" }, "none: the device stays on what it runs");
  }
  return card(
    "Desired state",
    kv([
      ["Firmware", firmware],
      ["Group firmware", campaign && fw ? `${release(fw)} from ${fw.from}` : undefined],
      ["Apps", desired.apps ? `${desired.apps.filter((a) => !a.absent).length} managed` : "not managed"],
      ["Window", h("span", {}, windowText(desired.window), desired.window_from ? h("span", { class: "sub" }, `from ${desired.window_from}`) : null)],
      ["Update hold", desired.update_hold ? chip("hold", "held: firmware withheld") : undefined],
      ["Directive", directive && directive.etag ? h("span", { class: "mono" }, directive.etag.slice(0, 16)) : "not computed yet"],
      ["Poll", directive && directive.poll_seconds ? `every ${fmtDuration(directive.poll_seconds)} ± ${fmtDuration(directive.jitter_seconds || 0)}` : undefined],
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
  const note = history.length === 1 ? "1 entry" : `latest ${history.length} entries`;
  return card("History", list, { flush: true, note });
}

export async function render(ctx) {
  const serial = ctx.params[0];
  ctx.crumbs([["Devices", "#/devices"], serial]);
  const body = h("div", { class: "grid" });

  function draw(d) {
    const identity = d.identity;
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
      h("div", { class: "grid two" }, identityCard(d), inventoryCard(d, null)),
      h(
        "div",
        { class: "grid two top" },
        h("div", { class: "grid" }, desiredCard(d), membershipCard(d), appsCard(d)),
        historyCard(d),
      ),
    );
  }

  draw(await load(serial));
  ctx.every(5000, async () => {
    const d = await load(serial);
    if (ctx.alive) draw(d);
  });
  return h("div", { "data-page": "device", "data-serial": serial }, body);
}
