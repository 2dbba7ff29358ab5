// The device list: search by serial, filter by model, status, group and firmware; 100 rows a
// page. Filters live in the URL (#/devices?q=…&model=…) so a filtered view can be shared.

import { DEVICE_CAP, listDevices } from "./data.js";
import { ago, chip, empty, fill, fmtNumber, h, icon, table } from "./ui.js";

const PAGE = 100;

function options(values, allLabel) {
  return [h("option", { value: "" }, allLabel), ...values.map((v) => h("option", { value: v }, v))];
}

function unique(values) {
  return [...new Set(values.filter(Boolean))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
}

function select(name, label, values, allLabel, current) {
  const el = h("select", { class: "select", name, "aria-label": label }, options(values, allLabel));
  el.value = values.includes(current) ? current : "";
  return el;
}

const COLUMNS = [
  { label: "Serial", render: (d) => h("span", { class: "mono" }, d.serial) },
  { label: "Model", render: (d) => d.model },
  {
    label: "Firmware",
    render: (d) =>
      d.firmware
        ? h("span", {}, d.firmware, d.slot_state && d.slot_state !== "committed" ? [" ", chip(d.slot_state)] : null)
        : h("span", { class: "faint" }, "not reported"),
  },
  {
    label: "Groups",
    render: (d) =>
      d.groups.length ? h("div", { class: "tags" }, d.groups.map((g) => h("span", { class: "tag" }, g))) : h("span", { class: "faint" }, "none"),
  },
  { label: "Last seen", render: (d) => ago(d.last_seen_at), cls: "nowrap" },
  { label: "Status", render: (d) => chip(d.status) },
];

export async function render(ctx) {
  ctx.crumbs(["Devices"]);
  let { devices, total } = await listDevices();
  const q = ctx.query;
  const search = h("input", {
    class: "input",
    type: "search",
    name: "q",
    placeholder: "Search serial, model, firmware, tag…",
    "aria-label": "Search devices",
    value: q.get("q") || "",
  });
  const model = select("model", "Model", unique(devices.map((d) => d.model)), "All models", q.get("model"));
  const status = select("status", "Status", unique(devices.map((d) => d.status)), "All statuses", q.get("status"));
  const groups = unique(devices.flatMap((d) => d.groups));
  const group = select("group", "Group", groups, "All groups", q.get("group"));
  const firmware = select("firmware", "Firmware", unique(devices.map((d) => d.firmware)), "All firmware", q.get("firmware"));
  const count = h("span", { class: "count", "data-count": "" });
  const results = h("div");
  const pager = h("div", { class: "pager" });
  let page = 0;

  function matches(d) {
    const text = search.value.trim().toLowerCase();
    if (model.value && d.model !== model.value) return false;
    if (status.value && d.status !== status.value) return false;
    if (group.value && !d.groups.includes(group.value)) return false;
    if (firmware.value && d.firmware !== firmware.value) return false;
    if (!text) return true;
    return [d.serial, d.model, d.firmware, d.agent_version, ...d.groups, ...d.tags]
      .filter(Boolean)
      .some((v) => String(v).toLowerCase().includes(text));
  }

  function update(resetPage = true) {
    if (resetPage) page = 0;
    const shown = devices.filter(matches);
    ctx.setQuery({ q: search.value.trim(), model: model.value, status: status.value, group: group.value, firmware: firmware.value });
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    const slice = shown.slice(page * PAGE, (page + 1) * PAGE);
    count.textContent =
      shown.length === devices.length
        ? `${fmtNumber(devices.length)} devices`
        : `${fmtNumber(shown.length)} of ${fmtNumber(devices.length)} devices`;
    fill(
      results,
      table(COLUMNS, slice, {
        href: (d) => `#/devices/${encodeURIComponent(d.serial)}`,
        empty: devices.length
          ? empty("search", "No device matches", "Change the search or clear the filters.")
          : empty("devices", "No devices enrolled yet", "Devices appear here after their first enrollment with a factory batch token."),
      }),
    );
    const prev = h("button", { type: "button", class: "btn sm", disabled: page === 0, "aria-label": "Previous page" }, icon("left", "sm"));
    const next = h("button", { type: "button", class: "btn sm", disabled: page >= pages - 1, "aria-label": "Next page" }, icon("right", "sm"));
    prev.addEventListener("click", () => {
      page -= 1;
      update(false);
    });
    next.addEventListener("click", () => {
      page += 1;
      update(false);
    });
    pager.hidden = pages <= 1;
    fill(pager, `Page ${page + 1} of ${pages}`, prev, next);
  }

  ctx.every(30000, async () => {
    ({ devices, total } = await listDevices());
    if (ctx.alive) update(false);
  });
  search.addEventListener("input", () => update());
  for (const el of [model, status, group, firmware]) el.addEventListener("change", () => update());
  update();

  return h(
    "div",
    { class: "grid", "data-page": "devices" },
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "titles" }, h("h1", {}, "Devices"), h("p", { class: "sub" }, "Every enrolled device, its firmware and when it last checked in.")),
    ),
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "toolbar" },
        h("div", { class: "search" }, icon("search", "sm"), search),
        model,
        status,
        groups.length ? group : null,
        firmware,
        count,
      ),
      total > devices.length
        ? h("div", { class: "banner warn" }, icon("alert"), h("div", { class: "text" }, h("strong", {}, `Showing the first ${fmtNumber(DEVICE_CAP)} of ${fmtNumber(total)} devices`), h("span", {}, "Use the command line (garrison device list) for the whole fleet.")))
        : null,
      results,
      pager,
    ),
  );
}
