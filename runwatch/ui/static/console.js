// The GraphiQL console (GET /graphql), with the explorer plugin. Everything it loads is on this
// origin. The token the status UI signed in with (sessionStorage, never the URL) prefills the
// Authorization header and the WebSocket's connection_init payload (subscriptions).
(function () {
  "use strict";
  const url = window.location.origin + window.location.pathname;
  const ws = url.replace(/^http/, "ws");
  const token = window.sessionStorage.getItem("runwatch.token");
  const auth = token ? { Authorization: "Bearer " + token } : {};
  const example = [
    "# runwatch GraphiQL: Ctrl-Enter runs the query; the explorer (left) builds one.",
    "query Connections {",
    "  connections(first: 10) {",
    "    nodes { id name warehouseType telemetry { status statusReason } }",
    "  }",
    "}",
    "",
  ].join("\n");

  const fetcher = GraphiQL.createFetcher({
    url: url,
    subscriptionUrl: ws,
    wsConnectionParams: auth,
  });

  function Console() {
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: example,
      defaultHeaders: token ? JSON.stringify(auth, null, 2) : undefined,
      defaultEditorToolsVisibility: token ? "headers" : true,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      // The token stays in this tab's sessionStorage: headers are not persisted, and what
      // GraphiQL keeps (tabs, history, which would include the headers) goes to
      // sessionStorage, not localStorage.
      shouldPersistHeaders: false,
      storage: window.sessionStorage,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(Console));
})();
