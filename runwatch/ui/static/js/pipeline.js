// The pipeline page (#/pipeline/ID): its runs with a status filter and paging, anomalies,
// freshness and timeliness results, and its lineage as a picture.

import { gql } from "./api.js";
import { badge, duration, h, lineageGraph, message, num, stamp, table, when } from "./dom.js";

const STATUSES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];
const PAGE = 20;
const MAX_LINEAGE_LOOKUPS = 20;

async function lineageOf(pipelineId, addresses) {
  const seen = new Set();
  const nodes = new Map();
  const edges = new Map();
  for (const address of addresses.slice(0, MAX_LINEAGE_LOOKUPS)) {
    if (seen.has(address.id)) continue;
    const data = await gql("lineage", { addressId: address.id });
    if (!data.lineage) continue;
    for (const n of data.lineage.nodes) {
      seen.add(n.id);
      nodes.set(n.id, n);
    }
    for (const e of data.lineage.edges) edges.set(`${e.sourceId}>${e.targetId}`, e);
  }
  const mine = [...edges.values()].filter((e) => e.pipeline && e.pipeline.id === pipelineId);
  const touched = new Set(mine.flatMap((e) => [e.sourceId, e.targetId]));
  // this pipeline's edges, and the edges of other pipelines into or out of its datasets
  const shown = [...edges.values()].filter((e) => touched.has(e.sourceId) || touched.has(e.targetId));
  const ids = new Set(shown.flatMap((e) => [e.sourceId, e.targetId]));
  return { nodes: [...nodes.values()].filter((n) => ids.has(n.id)), edges: shown, mine: mine.length };
}

export async function pipelinePage(main, id) {
  const state = { status: "", cursors: [null] };

  async function load() {
    const after = state.cursors[state.cursors.length - 1];
    return gql("pipeline", {
      id, first: PAGE, after, status: state.status ? [state.status] : null,
    });
  }

  let data = await load();
  if (!data.pipeline) {
    main.replaceChildren(message("error", `Pipeline ${id} was not found (or belongs to another organisation). `,
      h("a", { href: "#/" }, "Back to the board")));
    return;
  }
  const p = data.pipeline;
  const runsSection = h("section#runs");
  const lineageSection = h("section#lineage", h("h2", "Lineage"), h("p.loading", "Loading the lineage…"));

  function renderRuns() {
    const pipeline = data.pipeline;
    const filter = h("select", {
      id: "status-filter", "aria-label": "Filter runs by status",
      onchange: async (event) => {
        state.status = event.target.value;
        state.cursors = [null];
        data = await load();
        renderRuns();
      },
    }, h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s.toLowerCase().replace("_", " "))));
    const rows = pipeline.runs.nodes.map((r) => h("tr", { dataset: { run: r.id } },
      h("td", h("a", { href: `#/run/${r.id}` }, `#${r.id}`)),
      h("td", badge(r.status)),
      h("td", stamp(r.startedAt)),
      h("td", duration(r.durationSeconds)),
      h("td.num", num(r.rowsTotal)),
      h("td.num", num(r.eventsDelivered)),
      h("td.error-text", r.error || "")));
    const page = state.cursors.length;
    const pager = h("div.pager",
      h("button", { type: "button", disabled: page === 1, onclick: async () => {
        state.cursors.pop();
        data = await load();
        renderRuns();
      } }, "← Newer"),
      h("span", `Page ${page}`),
      h("button", { type: "button", disabled: !pipeline.runs.pageInfo.hasNextPage, onclick: async () => {
        state.cursors.push(pipeline.runs.pageInfo.endCursor);
        data = await load();
        renderRuns();
      } }, "Older →"));
    runsSection.replaceChildren(h("h2", "Runs"), h("div.filters", h("label", "Status ", filter)),
      table(["Run", "Status", "Started (UTC)", "Duration", "Rows", "Events", "Error"], rows,
        state.status ? `No ${state.status.toLowerCase()} runs.` : "No runs yet."),
      rows.length || page > 1 ? pager : "");
  }
  renderRuns();

  const anomalies = data.anomalyResults.nodes.map((a) => h("tr",
    h("td", h("a", { href: `#/run/${a.runId}` }, `#${a.runId}`)),
    h("td", a.metricField), h("td.num", num(a.value)), h("td.num", num(Math.round(a.mean))),
    h("td", `${num(Math.round(a.lowerBound))} – ${num(Math.round(a.upperBound))}`),
    h("td", stamp(a.detectedAt))));
  const freshness = data.freshnessLogs.nodes.filter((f) => f.pipelineId === p.id).map((f) => h("tr",
    h("td", stamp(f.createdAt)), h("td", stamp(f.lastDmlAt)), h("td", stamp(f.deadlineAt))));
  const timeliness = data.timelinessLogs.nodes.filter((t) => t.pipelineId === p.id).map((t) => h("tr",
    h("td", stamp(t.createdAt)), h("td", h("a", { href: `#/run/${t.runId}` }, `#${t.runId}`)),
    h("td", t.runStatus), h("td", stamp(t.deadlineAt))));
  const rule = (n, part) => (n ? `${n} ${part}${n === 1 ? "" : "s"}` : "not set");

  main.replaceChildren(
    h("p.crumbs", h("a", { href: "#/" }, "Board"), " / pipeline"),
    h("h1", p.name, " ", badge(p.telemetry.status)),
    h("p.reason", p.telemetry.statusReason),
    h("dl.facts",
      h("dt", "Kind"), h("dd", p.kind),
      h("dt", "Connection"), h("dd", p.connection ? p.connection.name : "–"),
      h("dt", "Last delivery"), h("dd", when(p.telemetry.lastDeliveryAt)),
      h("dt", "Freshness rule"), h("dd", rule(p.freshnessNumber, p.freshnessDatepart)),
      h("dt", "Timeliness rule"), h("dd", rule(p.timelinessNumber, p.timelinessDatepart)),
      p.description ? [h("dt", "Description"), h("dd", p.description)] : null),
    runsSection,
    h("section#anomalies", h("h2", "Anomalies"), table(
      ["Run", "Metric", "Value", "Mean", "Expected range", "Detected (UTC)"], anomalies,
      "No anomalies detected.")),
    h("section#freshness", h("h2", "Freshness results"), table(
      ["Checked (UTC)", "Last change", "Deadline"], freshness, "No freshness misses recorded.")),
    h("section#timeliness", h("h2", "Timeliness results"), table(
      ["Checked (UTC)", "Run", "Run status", "Deadline"], timeliness, "No late runs recorded.")),
    lineageSection);

  try {
    const graph = await lineageOf(p.id, data.addresses);
    lineageSection.replaceChildren(h("h2", "Lineage"), graph.mine
      ? h("div.lineage-wrap", lineageGraph(graph.nodes, graph.edges, p.id),
        h("p.sub", "Highlighted: the edges this pipeline writes."))
      : h("p.empty", "No lineage recorded for this pipeline."));
  } catch (err) {
    lineageSection.replaceChildren(h("h2", "Lineage"), message("error", `The lineage could not be loaded: ${err.message}`));
  }
}
