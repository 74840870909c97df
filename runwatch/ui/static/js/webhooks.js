// Webhook endpoints with their latest deliveries (and redeliver), and alert channels.

import { gql } from "./api.js";
import { badge, h, message, num, stamp, table } from "./dom.js";

export async function webhooksPage(main) {
  const data = await gql("webhooks");
  const endpoints = data.webhookEndpoints.nodes;
  const cards = endpoints.map((endpoint) => {
    const rows = endpoint.deliveries.nodes.map((d) => {
      const status = h("td", badge(d.status));
      const note = h("td.note");
      const attempts = h("td.num", num(d.attemptCount));
      const button = h("button", {
        type: "button", class: "redeliver", dataset: { delivery: d.id },
        onclick: async () => {
          button.disabled = true;
          note.replaceChildren("Redelivering…");
          try {
            const result = (await gql("redeliver", { id: d.id })).redeliverWebhook;
            if (result.__typename === "WebhookDeliverySuccess") {
              status.replaceChildren(badge(result.delivery.status));
              attempts.textContent = num(result.delivery.attemptCount);
              note.replaceChildren(message("ok", "Queued for redelivery."));
            } else {
              note.replaceChildren(message("error", result.message));
            }
          } catch (err) {
            note.replaceChildren(message("error", err.message));
          } finally {
            button.disabled = false;
          }
        },
      }, "Redeliver");
      return h("tr", { dataset: { delivery: d.id } },
        h("td", `#${d.id}`), h("td", d.eventType),
        h("td", d.run ? h("a", { href: `#/run/${d.run.id}` }, `#${d.run.id}`) : "–"),
        status, attempts, h("td.num", d.lastStatusCode ?? "–"),
        h("td.error-text", d.lastError || ""), h("td", stamp(d.createdAt)), h("td", button), note);
    });
    return h("section.card", { dataset: { endpoint: endpoint.id } },
      h("h2", endpoint.url, " ", endpoint.enabled ? null : h("span.badge.s-idle", "disabled")),
      h("p.sub", endpoint.pipeline
        ? ["For pipeline ", h("a", { href: `#/pipeline/${endpoint.pipeline.id}` }, endpoint.pipeline.name)]
        : "The organisation's default endpoint",
      " · events: ", endpoint.eventTypes.join(", ")),
      table(["Delivery", "Event", "Run", "Status", "Attempts", "HTTP", "Last error", "Created (UTC)", "", ""],
        rows, "No deliveries yet."));
  });
  main.replaceChildren(h("h1", "Webhooks"),
    ...(cards.length ? cards
      : [h("p.empty", "No webhook endpoints. Set one with the setWebhookEndpoint mutation.")]));
}

export async function alertsPage(main) {
  const data = await gql("alerts");
  const rows = data.alertChannels.map((c) => {
    let host = c.url;
    try {
      host = new URL(c.url).host; // the full URL of an incoming webhook is a secret
    } catch (err) { /* keep it as it is */ }
    return h("tr", h("td", h("b", c.name)), h("td", c.kind), h("td", host),
      h("td", c.enabled ? h("span.badge.s-active", "enabled") : h("span.badge.s-idle", "disabled")), h("td", stamp(c.createdAt)));
  });
  main.replaceChildren(h("h1", "Alert channels"),
    table(["Name", "Kind", "Target host", "Enabled", "Created (UTC)"], rows,
      "No alert channels. Add one with the createAlertChannel mutation."));
}
