// The status UI: a hash router (#/, #/pipeline/ID, #/run/ID, #/webhooks, #/alerts), the
// sign-in screen and the frame around the screens. Tokens live in sessionStorage only.

import { ApiError, gql, setToken, token } from "./api.js";
import { h, message } from "./dom.js";
import { board } from "./board.js";
import { pipelinePage } from "./pipeline.js";
import { runPage } from "./run.js";
import { alertsPage, webhooksPage } from "./webhooks.js";

const ROUTES = [
  [/^#?\/?$/, board],
  [/^#\/pipeline\/([^/]+)$/, pipelinePage],
  [/^#\/run\/([^/]+)$/, runPage],
  [/^#\/webhooks$/, webhooksPage],
  [/^#\/alerts$/, alertsPage],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;
let signInNote = null;
// Each navigation's number: a screen still loading when the person moves on (its query slow)
// must not draw over the screen they went to, nor leave its live updates running.
let navigation = 0;

/** What a screen draws into: `main` while its navigation is the current one, nothing after. */
function target(number) {
  return {
    replaceChildren(...nodes) {
      if (number === navigation) main.replaceChildren(...nodes);
    },
  };
}

function signIn(note) {
  nav.hidden = true;
  const input = h("input", {
    id: "token", type: "password", name: "token", autocomplete: "off", required: true,
    placeholder: "rw_…", "aria-label": "API token",
  });
  const status = h("div.form-status");
  const form = h("form.signin", {
    onsubmit: async (event) => {
      event.preventDefault();
      const value = input.value.trim().replace(/^bearer\s+/i, "");
      if (!value) return;
      status.replaceChildren(message("info", "Checking the token…"));
      setToken(value);
      try {
        await gql("signIn");
        signInNote = null;
        route();
      } catch (err) {
        setToken(null);
        status.replaceChildren(message("error", err.kind === "auth"
          ? `That token was not accepted: ${err.message}` : err.message));
      }
    },
  },
  h("h1", "Sign in to runwatch"),
  h("p", "Paste an API token with the read scope (", h("code", "runwatch token create"),
    " prints one; ", h("code", "runwatch serve"), " prints the first admin token). It is kept in this tab's session storage only and sent as an Authorization header."),
  h("label", { for: "token" }, "API token"), input,
  h("button", { type: "submit" }, "Sign in"),
  note ? message("error", note) : null,
  status);
  main.replaceChildren(form);
  input.focus();
}

export async function route() {
  const number = ++navigation;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!token()) {
    signIn(signInNote);
    return;
  }
  nav.hidden = false;
  const hash = window.location.hash || "#/";
  for (const a of nav.querySelectorAll("a[data-screen]")) {
    a.classList.toggle("current", hash === a.getAttribute("href")
      || (a.dataset.screen === "board" && /^#\/(pipeline|run)\//.test(hash)));
  }
  const match = ROUTES.map(([pattern, view]) => [hash.match(pattern), view]).find(([m]) => m);
  if (!match) {
    main.replaceChildren(message("error", "There is no such page. ", h("a", { href: "#/" }, "Back to the board")));
    return;
  }
  const [groups, view] = match;
  main.replaceChildren(h("p.loading", "Loading…"));
  try {
    const stop = (await view(target(number), ...groups.slice(1))) || null;
    if (number === navigation) cleanup = stop;
    else if (stop) stop();  // the person moved on while it loaded
  } catch (err) {
    if (number !== navigation) return;
    if (err instanceof ApiError && err.kind === "auth") {
      setToken(null);
      signInNote = `Signed out: ${err.message}`;
      signIn(signInNote);
      return;
    }
    main.replaceChildren(message("error", `This page could not be loaded: ${err.message}`));
  }
}

document.getElementById("signout").addEventListener("click", () => {
  setToken(null);
  signInNote = null;
  route();
});
window.addEventListener("hashchange", route);
route();
