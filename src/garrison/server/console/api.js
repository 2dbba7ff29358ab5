// The console's only way to the control plane: the admin REST API under /api/v1, with the
// principal's bearer token. The token lives in sessionStorage (gone when the tab closes);
// responses are never cached.

const TOKEN_KEY = "garrison.token";

/** An API refusal or a network failure, with the server's message and hint. */
export class ApiError extends Error {
  constructor(status, message, hint = "", path = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.hint = hint;
    this.path = path;
  }

  /** True when the endpoint itself does not exist on this control plane. */
  get missing() {
    return this.status === 404 && this.message === "Not Found";
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI validation errors: [{loc, msg}]
    return detail
      .map((e) => {
        const where = (e.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${e.msg}` : e.msg;
      })
      .join("; ");
  }
  return "";
}

/**
 * Call the admin API. `path` is relative to /api/v1. Resolves to the decoded JSON (null for
 * an empty answer); rejects with an ApiError carrying the server's message and hint. A 401
 * also dispatches "garrison:unauthorized" so the shell can return to the login page.
 */
export async function api(path, { method = "GET", body, params, token } = {}) {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") {
      url.searchParams.set(key, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  const bearer = token ?? session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(
      0,
      "The control plane cannot be reached",
      "check the network connection to the control plane; the page retries on its next refresh",
      path,
    );
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message =
      (data && describe(data.detail)) || `${response.status} ${response.statusText || "error"}`;
    const error = new ApiError(response.status, message, (data && data.hint) || "", path);
    if (response.status === 401 && !token) {
      window.dispatchEvent(new CustomEvent("garrison:unauthorized", { detail: error }));
    }
    throw error;
  }
  return data;
}

/** Like api(), but resolves to `fallback` when the endpoint does not exist here. */
export async function optional(path, fallback, options) {
  try {
    return await api(path, options);
  } catch (error) {
    if (error instanceof ApiError && error.missing) return fallback;
    throw error;
  }
}
