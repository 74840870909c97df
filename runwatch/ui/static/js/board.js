// The board (#/): connections and pipelines, each with its delivery status and the reason,
// last delivery, 24 h / 7 d event counts by type, its failure streak and 7-day bars.

import { gql } from "./api.js";
import { badge, dayBars, h, lastDays, message, num, table, when } from "./dom.js";

const FAILED = new Set(["FAILED", "TIMED_OUT"]);
const FINISHED = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"]);

/** Newest-first finished runs -> how many failed in a row from the newest. */
function streak(runs) {
  let n = 0;
  for (const run of runs) {
    if (!FINISHED.has(run.status)) continue;
    if (!FAILED.has(run.status)) break;
    n += 1;
  }
  return n;
}

function perDay(runs, days) {
  const counts = new Map(days.map((day) => [day, { day, ok: 0, failed: 0, other: 0 }]));
  for (const run of runs) {
    const day = counts.get((run.startedAt || "").slice(0, 10));
    if (!day) continue;
    if (run.status === "SUCCEEDED") day.ok += 1;
    else if (FAILED.has(run.status)) day.failed += 1;
    else day.other += 1;
  }
  return [...counts.values()];
}

function events(counts) {
  return h("span.events", { title: `${num(counts.evaluations)} evaluations, ${num(counts.customEvents)} custom events` },
    h("b", num(counts.total)), h("small", ` ${num(counts.evaluations)} eval · ${num(counts.customEvents)} custom`));
}

function statusCell(telemetry) {
  return h("td.status", badge(telemetry.status), h("div.reason", telemetry.statusReason));
}

function streakCell(n) {
  return h(`td.num${n ? ".streak" : ""}`, n ? `${n} failed` : "–");
}

export async function board(main) {
  const since = new Date(Date.now() - 7 * 86400 * 1000);
  since.setUTCHours(0, 0, 0, 0);
  const data = await gql("board", { since: since.toISOString() });
  const days = lastDays(7);
  const runsByPipeline = new Map();
  for (const run of data.runs.nodes) {
    const list = runsByPipeline.get(run.pipeline.id) || [];
    list.push(run);
    runsByPipeline.set(run.pipeline.id, list);
  }
  const pipelines = data.pipelines.nodes;
  const runsOfConnection = (id) => pipelines
    .filter((p) => p.connection && p.connection.id === id)
    .flatMap((p) => runsByPipeline.get(p.id) || [])
    .sort((a, b) => Number(b.id) - Number(a.id));

  const connectionRows = data.connections.nodes.map((c) => {
    const runs = runsOfConnection(c.id);
    const own = pipelines.filter((p) => p.connection && p.connection.id === c.id);
    return h("tr", { dataset: { connection: c.id } },
      h("td", h("b", c.name), h("div.sub", c.warehouseType),
        own.length ? h("div.sub", own.map((p, i) => [i ? ", " : "", h("a", { href: `#/pipeline/${p.id}` }, p.name)])) : null),
      statusCell(c.telemetry),
      h("td", when(c.telemetry.lastDeliveryAt)),
      h("td", events(c.telemetry.eventsLast24h)),
      h("td", events(c.telemetry.eventsLast7d)),
      h("td.num", num(c.telemetry.failedDeliveriesLast24h)),
      streakCell(streak(runs)),
      h("td", dayBars(perDay(runs, days))));
  });
  const pipelineRows = pipelines.map((p) => {
    const runs = runsByPipeline.get(p.id) || [];
    return h("tr", { dataset: { pipeline: p.id } },
      h("td", h("a", { href: `#/pipeline/${p.id}` }, h("b", p.name)), h("div.sub", p.kind, p.active ? "" : " · inactive")),
      statusCell(p.telemetry),
      h("td", when(p.telemetry.lastDeliveryAt)),
      h("td", events(p.telemetry.eventsLast24h)),
      h("td", events(p.telemetry.eventsLast7d)),
      h("td.num", num(p.telemetry.failedDeliveriesLast24h)),
      streakCell(streak(runs)),
      h("td", dayBars(perDay(runs, days))));
  });
  const headers = ["Name", "Status and reason", "Last delivery", "Events 24 h", "Events 7 d",
    "Failed 24 h", "Failure streak", "Runs, 7 days"];
  main.replaceChildren(
    h("h1", "Board"),
    data.runs.pageInfo.hasNextPage
      ? message("info", "Streaks and bars count the latest 200 runs of the last 7 days.") : "",
    h("section#connections", h("h2", "Connections"),
      table(headers, connectionRows, "No connections yet: create one with the createConnection mutation or the warehouse-connection REST route (the README shows both).")),
    h("section#pipelines", h("h2", "Pipelines"),
      table(headers, pipelineRows, "No pipelines yet.")));
}
