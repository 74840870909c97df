// The run page (#/run/ID): metrics, error, logs (with what was dropped or not shown) and the
// live telemetry samples as a chart, kept up to date by the runUpdates subscription.

import { gql, subscribe } from "./api.js";
import { badge, bytes, duration, h, lineChart, message, num, stamp, table } from "./dom.js";

const LOG_PAGE = 200;

export async function runPage(main, id) {
  const data = await gql("run", { id });
  if (!data.run) {
    main.replaceChildren(message("error", `Run ${id} was not found (or belongs to another organisation). `,
      h("a", { href: "#/" }, "Back to the board")));
    return null;
  }
  const run = data.run;
  const logs = [...run.logEntries.nodes];
  const samples = [...run.telemetrySamples.nodes];
  const moreLogs = run.logEntries.pageInfo.hasNextPage;
  const moreSamples = run.telemetrySamples.pageInfo.hasNextPage;

  const title = h("h1");
  const live = h("span#live.live");
  const metrics = h("section#metrics");
  const errorBox = h("section#error");
  const chartBox = h("section#samples");
  const logList = h("ol#logs.logs");
  const logNotes = h("div.log-notes");

  function renderHead() {
    title.replaceChildren(`Run #${run.id} `, badge(run.status), " ", live);
  }

  function renderMetrics() {
    const summary = run.telemetrySummary || {};
    const by = run.eventsByType;
    const fact = (label, value) => [h("dt", label), h("dd", value)];
    metrics.replaceChildren(h("h2", "Metrics"), h("dl.facts.grid",
      fact("Environment", run.environment),
      fact("Started (UTC)", stamp(run.startedAt)),
      fact("Finished (UTC)", stamp(run.finishedAt)),
      fact("Duration", duration(run.durationSeconds)),
      fact("Events delivered", num(run.eventsDelivered)),
      fact("Events by type", by ? `${num(by.evaluations)} evaluations · ${num(by.customEvents)} custom` : "–"),
      fact("DLQ batches", num(run.dlqBatches)),
      fact("Rows (total)", num(run.rowsTotal)),
      fact("Inserted / updated / deleted", `${num(run.rowsInserted)} / ${num(run.rowsUpdated)} / ${num(run.rowsDeleted)}`),
      fact("Bytes", bytes(run.bytes)),
      fact("Throughput", run.throughput === null ? "–" : `${num(Math.round(run.throughput))} rows/s`),
      fact("Progress", summary.progress === null || summary.progress === undefined ? "–"
        : `${Math.round(summary.progress * 100)} %${summary.currentPhase ? ` · ${summary.currentPhase}` : ""}${summary.currentResource ? ` · ${summary.currentResource}` : ""}`),
      fact("Rows loaded (live)", num(summary.rowsLoaded))));
    errorBox.replaceChildren(...(run.error ? [h("h2", "Error"), h("pre.error-text", run.error)] : []));
  }

  function renderChart() {
    const points = samples.filter((s) => s.rows !== null).map((s) => ({ x: new Date(s.at), y: Number(s.rows) }));
    chartBox.replaceChildren(h("h2", "Telemetry samples"),
      points.length ? lineChart(points, "rows") : h("p.empty", "No telemetry samples yet."),
      h("p.sub", `${samples.length} samples${moreSamples ? ` (the first ${samples.length} shown)` : ""}`,
        Number(run.telemetrySamplesDropped) ? ` · ${num(run.telemetrySamplesDropped)} earlier samples were dropped (the per-run cap)` : ""));
  }

  function logLine(line) {
    return h(`li.level-${line.level.toLowerCase()}`, { dataset: { seq: line.seq } },
      h("time", stamp(line.at).slice(11)), h("span.level", line.level), h("span.msg", line.message));
  }

  function renderLogNotes() {
    const notes = [];
    if (Number(run.logLinesDropped)) {
      notes.push(message("warn", `${num(run.logLinesDropped)} earlier log lines were dropped (the per-run cap); the oldest kept line is shown first.`));
    }
    if (moreLogs) notes.push(message("info", `Showing the first ${LOG_PAGE} lines of the log; new lines still arrive below.`));
    if (!logs.length) notes.push(h("p#no-logs.empty", "No log lines yet."));
    logNotes.replaceChildren(...notes);
  }

  renderHead();
  renderMetrics();
  renderChart();
  renderLogNotes();
  logList.replaceChildren(...logs.map(logLine));

  const anomalies = run.anomalyResults.map((a) => h("tr", h("td", a.metricField), h("td.num", num(a.value)),
    h("td", `${num(Math.round(a.lowerBound))} – ${num(Math.round(a.upperBound))}`)));
  const deliveries = run.webhookDeliveries.nodes.map((d) => h("tr", h("td", d.eventType), h("td", badge(d.status)),
    h("td.num", num(d.attemptCount)), h("td.num", d.lastStatusCode ?? "–")));

  main.replaceChildren(
    h("p.crumbs", h("a", { href: "#/" }, "Board"), " / ",
      h("a", { href: `#/pipeline/${run.pipeline.id}` }, run.pipeline.name), " / run"),
    title, errorBox, metrics, chartBox,
    h("section#log", h("h2", "Log"), logNotes, logList),
    h("section", h("h2", "Anomalies"), table(["Metric", "Value", "Expected range"], anomalies, "No anomalies on this run.")),
    h("section", h("h2", "Webhook deliveries"), table(["Event", "Status", "Attempts", "Last HTTP status"], deliveries,
      "No webhook deliveries for this run.")));

  const lastSeq = (list) => (list.length ? list[list.length - 1].seq : null);
  live.textContent = "● live";
  live.className = "live on";
  return subscribe("runUpdates", { id, logsAfter: moreLogs ? null : lastSeq(logs), samplesAfter: moreSamples ? null : lastSeq(samples) },
    (update) => {
      const u = update.runUpdates;
      Object.assign(run, u.run);
      for (const line of u.newLogLines) {
        if (logs.length && Number(line.seq) <= Number(lastSeq(logs))) continue;
        logs.push(line);
        if (!moreLogs) logList.append(logLine(line));
      }
      for (const sample of u.newSamples) {
        if (samples.length && Number(sample.seq) <= Number(lastSeq(samples))) continue;
        samples.push(sample);
      }
      renderHead();
      renderMetrics();
      renderChart();
      renderLogNotes();
    },
    (error) => {
      live.className = error ? "live broken" : "live off";
      live.textContent = error ? `live updates stopped: ${error.message}` : "finished";
      renderHead();
    });
}
