// The console's shell: login, the sidebar and header, and a hash router that mounts one
// page at a time. Pages get a context with the principal, the route's parameters, and
// timers that stop when the page is left.

import { ApiError, api, session } from "./api.js";
import { fill, h, icon, loading, toast, empty } from "./ui.js";
import * as overview from "./overview.js";
import * as devices from "./devices.js";
import * as device from "./device.js";
import * as campaigns from "./campaigns.js";
import * as campaign from "./campaign.js";
import * as audit from "./audit.js";
import { renderLogin } from "./login.js";

const ROUTES = [
  { path: /^\/overview$/, page: overview, nav: "overview", needs: "devices.read" },
  { path: /^\/devices$/, page: devices, nav: "devices", needs: "devices.read" },
  { path: /^\/devices\/([^/]+)$/, page: device, nav: "devices", needs: "devices.read" },
  { path: /^\/campaigns$/, page: campaigns, nav: "campaigns", needs: "devices.read" },
  { path: /^\/campaigns\/new$/, page: campaigns, nav: "campaigns", needs: "campaigns.manage", mode: "new" },
  { path: /^\/campaigns\/(\d+)$/, page: campaign, nav: "campaigns", needs: "devices.read" },
  { path: /^\/audit$/, page: audit, nav: "audit", needs: "audit.read" },
];

const NAV = [
  { id: "overview", label: "Fleet overview", icon: "overview", needs: "devices.read" },
  { id: "devices", label: "Devices", icon: "devices", needs: "devices.read" },
  { id: "campaigns", label: "Campaigns", icon: "campaigns", needs: "devices.read" },
  { id: "audit", label: "Audit log", icon: "audit", needs: "audit.read" },
];

const ROLE_NAMES = {
  admin: "Administrator",
  "security-officer": "Security officer",
  "release-manager": "Release manager",
  operator: "Operator",
  auditor: "Auditor",
  manufacturer: "Manufacturer",
};

const app = document.getElementById("app");
let me = null;
let shell = null;
let current = null; // the mounted page's context

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

function can(permission) {
  return Boolean(me && me.permissions.includes(permission));
}

function firstPage() {
  return can("devices.read") ? "/overview" : can("audit.read") ? "/audit" : null;
}

// ---- login and logout ------------------------------------------------------------------

async function signIn(token) {
  const who = await api("/me", { token });
  session.set(token);
  me = who;
  shell = null;
  if (/^\/\w/.test(parseHash().path)) route();
  else window.location.hash = `#${firstPage() || "/overview"}`; // the hashchange routes
}

function signOut(reason = null) {
  if (current) current.dispose();
  current = null;
  session.clear();
  me = null;
  shell = null;
  document.title = "Sign in · Garrison console";
  fill(app, renderLogin({ onToken: signIn, reason }));
  app.className = "";
}

window.addEventListener("garrison:unauthorized", (event) => {
  if (!me) return;
  signOut(event.detail);
});

// ---- the shell ---------------------------------------------------------------------------

function buildShell() {
  const nav = h("nav", { class: "nav", "aria-label": "Main" }, h("div", { class: "nav-label" }, "Fleet"));
  for (const item of NAV) {
    if (!can(item.needs)) continue;
    nav.append(
      h("a", { href: `#/${item.id}`, "data-nav": item.id }, icon(item.icon), h("span", {}, item.label)),
    );
  }
  const crumbs = h("div", { class: "crumbs" });
  const logout = h(
    "button",
    { type: "button", class: "btn ghost sm", title: "Sign out", "data-action": "logout" },
    icon("logout", "sm"),
    "Sign out",
  );
  logout.addEventListener("click", () => signOut());
  const content = h("main", { class: "content", id: "content", tabindex: "-1" });
  const root = h(
    "div",
    { class: "shell" },
    h(
      "aside",
      { class: "sidebar" },
      h(
        "a",
        { class: "brand", href: `#${firstPage() || "/overview"}` },
        h("img", { src: "favicon.svg", alt: "" }),
        h(
          "div",
          {},
          h("div", { class: "brand-name" }, "Garrison"),
          h("div", { class: "brand-org truncate", title: me.organization }, me.organization),
        ),
      ),
      nav,
      h("div", { class: "sidebar-foot" }, "Fleet control console"),
    ),
    h(
      "div",
      { class: "main" },
      h(
        "header",
        { class: "topbar" },
        crumbs,
        h(
          "div",
          { class: "whoami" },
          h("div", { class: "avatar", "aria-hidden": "true" }, me.name.slice(0, 2)),
          h(
            "div",
            { class: "whoami-text" },
            h("div", { class: "whoami-name", "data-principal": "" }, me.name),
            h("div", { class: "whoami-role", "data-role": me.role }, ROLE_NAMES[me.role] || me.role),
          ),
          logout,
        ),
      ),
      content,
    ),
  );
  fill(app, root);
  app.className = "";
  return { root, nav, crumbs, content };
}

/** Set the breadcrumbs: [[label, href], ..., label]. */
function setCrumbs(parts) {
  const nodes = [];
  parts.forEach((part, i) => {
    if (i > 0) nodes.push(h("span", { class: "sep", "aria-hidden": "true" }, "/"));
    nodes.push(
      Array.isArray(part)
        ? h("a", { href: part[1] }, part[0])
        : h("span", { class: "current", "aria-current": "page" }, part),
    );
  });
  fill(shell.crumbs, nodes);
  const last = parts[parts.length - 1];
  document.title = `${Array.isArray(last) ? last[0] : last} · Garrison console`;
}

// ---- routing -------------------------------------------------------------------------------

function makeContext(match, query) {
  const timers = new Set();
  const disposers = new Set();
  const ctx = {
    me,
    params: match ? match.slice(1).map(decodeURIComponent) : [],
    query,
    alive: true,
    can,
    crumbs: setCrumbs,
    /** Run `fn` every `ms` while this page is shown (skipped while the tab is hidden). */
    every(ms, fn) {
      let timer = null;
      const tick = async () => {
        if (!ctx.alive) return;
        if (!document.hidden) {
          try {
            await fn();
          } catch (error) {
            if (ctx.alive && !(error instanceof ApiError && error.status === 401)) toast(error);
          }
        }
        if (ctx.alive) {
          timer = setTimeout(tick, ms);
          timers.add(timer);
        }
      };
      timer = setTimeout(tick, ms);
      timers.add(timer);
    },
    onDispose(fn) {
      disposers.add(fn);
    },
    /** Update the query string of the current route without re-rendering the page. */
    setQuery(values) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(values)) if (v) params.set(k, v);
      const text = params.toString();
      const { path } = parseHash();
      window.history.replaceState(null, "", `#${path}${text ? `?${text}` : ""}`);
    },
    dispose() {
      ctx.alive = false;
      for (const t of timers) clearTimeout(t);
      for (const fn of disposers) fn();
    },
  };
  return ctx;
}

function forbidden(what) {
  return empty(
    "lock",
    "Your role cannot see this page",
    `${ROLE_NAMES[me.role] || me.role}s do not hold the permission “${what}”. Ask an administrator if you need it.`,
  );
}

async function route() {
  if (!me) return;
  const { path, query } = parseHash();
  let found = null;
  let match = null;
  for (const candidate of ROUTES) {
    match = path.match(candidate.path);
    if (match) {
      found = candidate;
      break;
    }
  }
  if (!found) {
    const home = firstPage();
    if (home && path !== home) {
      window.location.replace(`#${home}`);
      return;
    }
  }
  if (!shell) shell = buildShell();
  for (const link of shell.nav.querySelectorAll("a[data-nav]")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.nav === found.nav);
    if (found && link.dataset.nav === found.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current) current.dispose();
  const ctx = makeContext(match, query);
  current = ctx;
  if (!found) {
    setCrumbs(["Console"]);
    fill(shell.content, forbidden("devices.read"));
    return;
  }
  if (!can(found.needs)) {
    setCrumbs(["Not permitted"]);
    fill(shell.content, forbidden(found.needs));
    return;
  }
  fill(shell.content, loading());
  try {
    const node = await found.page.render(ctx, found.mode);
    if (ctx.alive) fill(shell.content, node);
  } catch (error) {
    if (!ctx.alive) return;
    if (error instanceof ApiError && error.status === 401) return; // back to login
    fill(
      shell.content,
      h(
        "section",
        { class: "card" },
        empty(
          "alert",
          error.status === 404 ? "Not found" : "This page could not be loaded",
          [error.message, error.hint].filter(Boolean).join(" — "),
          h("a", { class: "btn", href: `#${firstPage() || "/overview"}` }, "Back to the overview"),
        ),
      ),
    );
    toast(error);
  }
}

window.addEventListener("hashchange", route);

// ---- boot ---------------------------------------------------------------------------------

async function boot() {
  const token = session.token;
  if (!token) {
    signOut();
    return;
  }
  fill(app, loading("Signing in…"));
  try {
    me = await api("/me", { token });
  } catch (error) {
    signOut(error.status === 401 ? error : null);
    if (error.status !== 401) toast(error);
    return;
  }
  route();
}

boot();
