// Building blocks of the console's pages. Everything is built as DOM nodes with text
// content: no string ever becomes markup (the CSP requires Trusted Types, which would
// refuse markup from strings anyway), so data from devices and operators cannot inject anything.

const SVG = "http://www.w3.org/2000/svg";

const ICONS = {
  overview: "M3 3h7v9H3z M14 3h7v5h-7z M14 12h7v9h-7z M3 16h7v5H3z",
  devices: "M4 4h16v7H4z M4 13h16v7H4z M8 7.5h.01 M8 16.5h.01 M12 7.5h4 M12 16.5h4",
  campaigns: "M12 3 2 8l10 5 10-5-10-5z M2 16l10 5 10-5 M2 12l10 5 10-5",
  audit: "M9 6h11 M9 12h11 M9 18h11 M4 6l1 1 2-2 M4 12l1 1 2-2 M4 18l1 1 2-2",
  logout: "M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4 M16 17l5-5-5-5 M21 12H9",
  search: "M11 4a7 7 0 1 0 0 14 7 7 0 0 0 0-14z M21 21l-4.3-4.3",
  pause: "M8 5v14 M16 5v14",
  play: "M7 4l13 8-13 8z",
  stop: "M6 6h12v12H6z",
  plus: "M12 5v14 M5 12h14",
  check: "M22 11.1V12a10 10 0 1 1-5.9-9.1 M22 4 12 14l-3-3",
  alert:
    "M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z M12 9v4 M12 17h.01",
  x: "M18 6 6 18 M6 6l12 12",
  activity: "M22 12h-4l-3 9L9 3l-3 9H2",
  ban: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z M4.9 4.9l14.2 14.2",
  shield: "M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z M9 12l2 2 4-4",
  shieldOff: "M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z M9.5 9.5l5 5 M14.5 9.5l-5 5",
  refresh: "M21 12a9 9 0 1 1-3-6.7L21 8 M21 3v5h-5",
  left: "M15 18l-6-6 6-6",
  right: "M9 18l6-6-6-6",
  inbox:
    "M22 12h-6l-2 3h-4l-2-3H2 M5.5 5.1 2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-6l-3.5-6.9A2 2 0 0 0 16.8 4H7.2a2 2 0 0 0-1.7 1.1z",
  lock: "M5 11h14v10H5z M8 11V7a4 4 0 0 1 8 0v4",
  clock: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z M12 7v5l3 2",
  undo: "M3 7v6h6 M3 13a9 9 0 1 0 3-7.7L3 8",
  users: "M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2 M9 3a4 4 0 1 0 0 8 4 4 0 0 0 0-8z M22 21v-2a4 4 0 0 0-3-3.9 M16 3.1a4 4 0 0 1 0 7.8",
};

/** An SVG icon from the set above. */
export function icon(name, cls = "") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `icon ${cls}`.trim());
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name] || ICONS.alert);
  svg.append(path);
  return svg;
}

/**
 * h("a", {class: "btn", href: "#/x", onclick: fn}, "text", child...) — an element. Strings
 * become text nodes; null, undefined and false children are skipped; arrays are flattened.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting ----------------------------------------------------------------------

function pad(n) {
  return String(n).padStart(2, "0");
}

export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2026-11-21 20:05:09" in the browser's time zone; "—" if absent. */
export function fmtTime(value) {
  const d = parseTime(value);
  if (!d) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "42 s ago", "5 min ago", "in 3 d"; "never" if absent. */
export function fmtAgo(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return "never";
  const seconds = Math.round((now - date.getTime()) / 1000);
  const text = fmtDuration(Math.abs(seconds), true);
  if (Math.abs(seconds) < 5) return "just now";
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

/** A time element showing the relative time, with the absolute time as its tooltip. */
export function ago(value) {
  const date = parseTime(value);
  return h(
    "time",
    { datetime: date ? date.toISOString() : null, title: date ? fmtTime(value) : null },
    fmtAgo(value),
  );
}

/** 90061 → "1 d 1 h"; `coarse` keeps only the largest unit. */
export function fmtDuration(seconds, coarse = false) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const units = [
    ["d", 86400],
    ["h", 3600],
    ["min", 60],
    ["s", 1],
  ];
  const parts = [];
  let rest = Math.floor(seconds);
  for (const [label, size] of units) {
    if (rest >= size || (label === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(rest / size)} ${label}`);
      rest %= size;
    }
    if (parts.length === (coarse ? 1 : 2)) break;
  }
  return parts.join(" ");
}

export function fmtNumber(n) {
  return typeof n === "number" ? n.toLocaleString() : "—";
}

export function percent(part, whole) {
  if (!whole) return 0;
  return Math.round((100 * part) / whole);
}

// ---- status chips --------------------------------------------------------------------

const TONES = {
  ok: ["active", "valid", "succeeded", "committed", "completed", "on_target", "on-target", "ok"],
  info: [
    "running",
    "assigned",
    "downloading",
    "downloaded",
    "installing",
    "updating",
    "reverting",
    "trying",
    "trial",
  ],
  warn: ["paused", "reverted", "hold", "pinned", "retiring"],
  bad: ["failed", "rolled-back", "revoked", "refused", "halted", "error", "broken"],
};
const LIVE = new Set(["running", "downloading", "installing", "reverting", "updating", "trying", "trial"]);

export function tone(state) {
  const key = String(state || "").toLowerCase();
  for (const [name, states] of Object.entries(TONES)) {
    if (states.includes(key)) return name;
  }
  return "";
}

/** A status chip coloured by what the state means (green done, blue moving, red failed). */
export function chip(state, label) {
  const t = tone(state);
  const cls = ["chip", t, LIVE.has(String(state)) ? "live" : ""].filter(Boolean).join(" ");
  return h("span", { class: cls }, label ?? String(state ?? "unknown").replace(/_/g, " "));
}

// ---- bars ----------------------------------------------------------------------------

/** A stacked bar: segments [{value, tone, label}] in proportion; grey where nothing is. */
export function stackBar(segments, cls = "") {
  const bar = h("div", { class: `stack ${cls}`.trim(), role: "img" });
  const total = segments.reduce((sum, s) => sum + (s.value || 0), 0);
  bar.setAttribute(
    "aria-label",
    segments.map((s) => `${s.label}: ${s.value || 0}`).join(", ") || "no devices",
  );
  for (const segment of segments) {
    if (!segment.value) continue;
    const part = h("span", { class: segment.tone, title: `${segment.label}: ${segment.value}` });
    part.style.flexGrow = String(segment.value);
    part.style.flexBasis = "0";
    bar.append(part);
  }
  if (!total) bar.title = "no devices";
  return bar;
}

export function legend(items) {
  return h(
    "div",
    { class: "legend" },
    items.map(([t, label]) => h("span", {}, h("i", { class: t }), label)),
  );
}

// ---- layout pieces ---------------------------------------------------------------------

export function card(title, body, { actions = null, note = null, flush = false, cls = "" } = {}) {
  return h(
    "section",
    { class: `card ${cls}`.trim() },
    title
      ? h("header", { class: "card-head" }, h("h2", {}, title), note && h("span", { class: "muted" }, note), actions)
      : null,
    h("div", { class: flush ? "card-body flush" : "card-body" }, body),
  );
}

export function empty(iconName, title, text, action = null) {
  return h(
    "div",
    { class: "empty" },
    icon(iconName),
    h("strong", {}, title),
    text && h("p", {}, text),
    action,
  );
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading" }, h("div", { class: "spinner" }), text);
}

export function banner(t, iconName, title, text) {
  return h(
    "div",
    { class: `banner ${t}` },
    icon(iconName),
    h("div", { class: "text" }, h("strong", {}, title), text && h("span", {}, text)),
  );
}

/** A definition list from [label, value] pairs (pairs with value undefined are skipped). */
export function kv(pairs) {
  const list = h("dl", { class: "kv" });
  for (const [label, value] of pairs) {
    if (value === undefined) continue;
    list.append(h("dt", {}, label), h("dd", {}, value === null || value === "" ? "—" : value));
  }
  return list;
}

/**
 * A table with sticky headers. columns: [{label, render(row) → node|string, cls}].
 * `href(row)` makes each row a link (the first cell holds a real anchor for keyboards).
 */
export function table(columns, rows, { href = null, empty: emptyNode = null, wrapClass = "" } = {}) {
  if (!rows.length && emptyNode) return emptyNode;
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.cls || null, scope: "col" }, c.label)));
  const body = h("tbody");
  for (const row of rows) {
    const link = href ? href(row) : null;
    const tr = h("tr", { class: link ? "link" : null });
    columns.forEach((column, index) => {
      let content = column.render(row);
      if (content === null || content === undefined || content === "") content = "—";
      if (index === 0 && link) content = h("a", { href: link }, content);
      tr.append(h("td", { class: column.cls || null }, content));
    });
    if (link) {
      tr.addEventListener("click", (event) => {
        if (event.target.closest("a, button, input, select, summary")) return;
        window.location.hash = link.slice(1);
      });
    }
    body.append(tr);
  }
  return h(
    "div",
    { class: `table-wrap ${wrapClass}`.trim() },
    h("table", { class: "data" }, h("thead", {}, head), body),
  );
}

// ---- toasts and dialogs ---------------------------------------------------------------

/** Show an error (an ApiError's message and hint) or a success note for a few seconds. */
export function toast(what, kind = "error") {
  const host = document.getElementById("toasts");
  if (!host) return;
  const title = typeof what === "string" ? what : what.message || "Something went wrong";
  const hint = typeof what === "string" ? "" : what.hint || "";
  const close = h("button", { type: "button", "aria-label": "Dismiss" }, icon("x", "sm"));
  const node = h(
    "div",
    { class: `toast ${kind === "ok" ? "ok" : ""}`, role: kind === "ok" ? "status" : "alert" },
    icon(kind === "ok" ? "check" : "alert"),
    h("div", { class: "text" }, h("div", { class: "title" }, title), hint && h("div", { class: "hint" }, hint)),
    close,
  );
  const remove = () => node.remove();
  close.addEventListener("click", remove);
  host.append(node);
  while (host.children.length > 4) host.firstElementChild.remove();
  setTimeout(remove, kind === "ok" ? 4000 : 9000);
}

/**
 * Ask for confirmation in a modal dialog. Resolves to false when cancelled, else to true
 * (or, with `extra` form controls, to the dialog element so the caller can read them).
 */
export function confirmDialog({ title, text, confirmLabel, danger = false, extra = null }) {
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
    const ok = h(
      "button",
      { type: "button", class: danger ? "btn danger" : "btn primary", "data-confirm": "" },
      confirmLabel,
    );
    const dialog = h(
      "dialog",
      { class: "modal", "aria-label": title },
      h(
        "div",
        { class: "modal-body" },
        h("div", { class: danger ? "badge bad" : "badge" }, icon("alert")),
        h("div", {}, h("h2", {}, title), h("p", {}, text)),
      ),
      extra && h("div", { class: "modal-extra" }, extra),
      h("div", { class: "modal-foot" }, cancel, ok),
    );
    let answer = false;
    cancel.addEventListener("click", () => dialog.close());
    ok.addEventListener("click", () => {
      answer = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer ? dialog : false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
