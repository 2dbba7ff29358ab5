// The sign-in page: paste a principal's API token. The token is checked against
// GET /api/v1/me before it is kept (in sessionStorage, for this tab only).

import { fill, h, icon } from "./ui.js";

function errorBox(title, text) {
  return h(
    "div",
    { class: "login-error", role: "alert", "data-login-error": "" },
    icon("alert"),
    h("div", {}, h("strong", {}, title), text && h("span", {}, text)),
  );
}

export function renderLogin({ onToken, reason = null }) {
  const input = h("textarea", {
    class: "input",
    id: "token",
    name: "token",
    required: true,
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    placeholder: "gat_…",
    "aria-describedby": "token-help",
  });
  const submit = h("button", { type: "submit", class: "btn primary block" }, icon("lock", "sm"), "Sign in");
  const errors = h("div");
  if (reason) {
    fill(errors, errorBox("Your session has ended", [reason.message, reason.hint].filter(Boolean).join(" — ")));
  }
  const form = h(
    "form",
    { novalidate: true, "aria-label": "Sign in" },
    errors,
    h(
      "div",
      { class: "field" },
      h("label", { for: "token" }, "API token"),
      input,
      h(
        "div",
        { class: "help", id: "token-help" },
        "The token of your principal, as printed once by ‘garrison principal add’. It is kept only in this browser tab.",
      ),
    ),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      fill(errors, errorBox("Enter an API token", "Paste the token of your principal."));
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    submit.disabled = true;
    fill(errors);
    try {
      await onToken(token);
    } catch (error) {
      input.setAttribute("aria-invalid", "true");
      const title = error.status === 401 ? "This token was not accepted" : error.message;
      const text = error.status === 401 ? [error.message, error.hint].filter(Boolean).join(" — ") : error.hint;
      fill(errors, errorBox(title, text));
      submit.disabled = false;
      input.focus();
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  setTimeout(() => input.focus(), 0);
  return h(
    "div",
    { class: "login" },
    h(
      "div",
      { class: "login-card" },
      h(
        "div",
        { class: "login-brand" },
        h("img", { src: "favicon.svg", alt: "" }),
        h("div", {}, h("h1", {}, "Garrison"), h("p", {}, "Fleet control console")),
      ),
      form,
      h(
        "p",
        { class: "login-foot" },
        "What you can see and do follows your principal's role; the control plane enforces it on every request.",
      ),
    ),
  );
}
