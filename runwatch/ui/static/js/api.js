// The UI's only way to the server: the public GraphQL API at /graphql, over HTTP POST and the
// graphql-transport-ws WebSocket. Each screen's query text is its own committed file in
// /ui/queries/ (tests/test_ui_queries.py validates them against the schema).

const TOKEN_KEY = "runwatch.token";
const texts = new Map();

export function token() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
  else window.sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the screen shows as it is: `kind` is "auth", "graphql" or "network". */
export class ApiError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

async function queryText(name) {
  if (!texts.has(name)) {
    const response = await fetch(`/ui/queries/${name}.graphql`, { cache: "no-cache" });
    if (!response.ok) throw new ApiError("network", `The UI's query ${name} is missing.`);
    texts.set(name, await response.text());
  }
  return texts.get(name);
}

/** Run the named query or mutation; resolves to `data`, rejects with an ApiError. */
export async function gql(name, variables = {}) {
  const query = await queryText(name);
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const current = token();
  if (current) headers.Authorization = `Bearer ${current}`;
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST", headers, body: JSON.stringify({ query, variables }),
    });
  } catch (err) {
    throw new ApiError("network", `The server did not answer (${err.message}).`);
  }
  let body;
  try {
    body = await response.json();
  } catch (err) {
    throw new ApiError("network", `The server answered ${response.status} without JSON.`);
  }
  if (response.status === 401 || response.status === 403) {
    throw new ApiError("auth", (body.errors && body.errors[0].message) || "Not signed in.");
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const code = first.extensions && first.extensions.code;
    const kind = code === "UNAUTHENTICATED" || code === "FORBIDDEN" ? "auth" : "graphql";
    throw new ApiError(kind, first.message);
  }
  if (!response.ok) throw new ApiError("network", `The server answered ${response.status}.`);
  return body.data;
}

/**
 * Subscribe over graphql-transport-ws (the token goes in connection_init, never the URL).
 * `onNext(data)` per update, `onEnd(error|null)` once. Returns a function that stops it.
 */
export function subscribe(name, variables, onNext, onEnd) {
  let socket = null;
  let ended = false;
  const end = (error) => {
    if (ended) return;
    ended = true;
    onEnd(error);
    if (socket && socket.readyState <= 1) socket.close(1000);
  };
  queryText(name).then((query) => {
    if (ended) return;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
    socket = new WebSocket(url, "graphql-transport-ws");
    socket.onopen = () => {
      const current = token();
      socket.send(JSON.stringify({
        type: "connection_init",
        payload: current ? { Authorization: `Bearer ${current}` } : {},
      }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next") {
        if (message.payload.errors && message.payload.errors.length) {
          end(new ApiError("graphql", message.payload.errors[0].message));
        } else {
          onNext(message.payload.data);
        }
      } else if (message.type === "error") {
        end(new ApiError("graphql", (message.payload[0] || {}).message || "Subscription error."));
      } else if (message.type === "complete") {
        end(null);
      }
    };
    socket.onclose = (event) => {
      if (event.code === 4403) end(new ApiError("auth", "The token was refused."));
      else end(event.code === 1000 ? null : new ApiError("network", `Live updates stopped (${event.code}).`));
    };
  }, end);
  return () => end(null);
}
