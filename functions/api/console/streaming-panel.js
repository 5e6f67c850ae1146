// The Audit Logs page's Log streaming panel: the destination, its delivery health and the last
// day's chart, with Edit, Pause, Resume and Delete; drawn anew as its view changes.

import { call, projectPath } from "./api.js";
import { h, button, when, failure, messageRegion } from "./dom.js";
import { go, render, announce } from "./router.js";
import { manageMenu } from "./menu.js";
import { PROVIDERS, trustedIds } from "./streaming.js";
import { chart } from "./chart.js";
import { selecting, lookAgain, notLooked } from "./look.js";

/** A view as the panel compares it: the seconds since the last success, which the API counts
 * anew at every answer, left out. */
function compared(view) {
  return JSON.stringify({ ...view, health: view.health && { ...view.health, seconds_since_last_success: null } });
}

/** How often the streaming panel looks again at the configuration and its delivery health. */
const HEALTH_MS = 10000;

/** Draws the panel from the API's view, and again whenever the view changes (events delivered,
 * a destination failing or recovering, a change made elsewhere) while the person is not using
 * the panel: focus in it (its menu open), text selected in it, its Delete question, a Pause or
 * Resume under way, a failure it shows, its hourly table open, or the tab hidden; never while
 * `still()`. */
export function watchStreaming(p, panel, still) {
  const heading = panel.firstChild;
  let shown = null;
  const path = `${projectPath(p)}/streaming`;
  // What is shown is as of the last look that got an answer: a look that got none says so here,
  // on the panel (empty) before it speaks.
  const stale = h("p", { class: "hint stale", role: "status" });
  const draw = (view) => {
    drawStreaming(p, panel, heading, view);
    panel.append(stale);
  };
  call("GET", path).then(
    (view) => {
      shown = compared(view);
      draw(view);
    },
    (error) => {
      // Nothing to show yet: said, and looked at again like any view (`data-look-again`).
      shown = "";
      const region = h("div", { "data-look-again": "" });
      panel.replaceChildren(heading, region, stale);
      failure(region, error);
    },
  );
  const busy = () =>
    shown === null ||
    still() ||
    document.hidden ||
    panel.contains(document.activeElement) ||
    selecting(panel) ||
    panel.getAttribute("aria-busy") === "true" ||
    panel.querySelector(".confirm, [role=alert]:not([data-look-again]), .chart details[open]");
  lookAgain(
    panel,
    HEALTH_MS,
    busy,
    () => call("GET", path, undefined, {}, { background: true }),
    (view) => {
      const seen = compared(view);
      stale.textContent = "";
      if (seen === shown) return;
      shown = seen;
      draw(view);
    },
    (error) => {
      notLooked(stale, error, "shown as it was before");
    },
  );
}

function drawStreaming(p, panel, heading, view) {
  if (!view.destination) {
    panel.replaceChildren(
      heading,
      h("p", {}, "Log streaming is off: events are kept here and sent nowhere else."),
      button("Enable Log Streaming", () => go({ ...p, view: "streaming" }, { heading: "Enable Log Streaming" }), { class: "primary" }),
      roleTrust(view),
    );
    return;
  }
  const d = view.destination;
  const health = view.health;
  const message = messageRegion();
  const rows = [
    ["Provider", PROVIDERS[d.provider] || d.provider],
    ["Destination name", d.name],
    d.cloudwatch && ["Role ARN", d.cloudwatch.role_arn],
    d.cloudwatch && ["AWS region", d.cloudwatch.region],
    d.datadog && ["Datadog site", d.datadog.site],
    d.datadog && ["API Key", d.datadog.api_key_last4 ? `ending in ${d.datadog.api_key_last4}` : "saved"],
    ["Health", `${health.status} (${health.state})`],
    ["Last success", when(health.last_success_at)],
    // Kept after a recovery: said with when it happened.
    ["Last error", health.last_error ? `${health.last_error} (${when(health.last_failure_at)})` : "—"],
    ["Pending events", String(health.pending)],
    // Why a delivering lane may still be failing: events owed longer than a few minutes.
    health.oldest_pending_at && ["Oldest pending event", when(health.oldest_pending_at)],
    health.next_attempt_at && ["Next attempt", when(health.next_attempt_at)],
    ["Last 24 hours", `${health.delivered_24h} delivered, ${health.failed_24h} failed`],
  ].filter(Boolean);
  const details = h(
    "dl",
    { class: "facts" },
    rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
  const reload = (text, kind) => {
    // An answer that comes after the person moved on leaves their page as it is.
    if (!panel.isConnected) return;
    announce(text, kind);
    render();
  };
  const act = async (method, path, done, headers) => {
    // No look again redraws the panel while it waits: its answer is shown in this one.
    panel.setAttribute("aria-busy", "true");
    try {
      await call(method, `${projectPath(p)}/streaming${path}`, undefined, headers);
      reload(done);
    } catch (error) {
      // Someone changed the destination since this page read it (a Delete names the version
      // it saw): show it as it is now rather than ask again with the same old version.
      if (error.status === 412) {
        return reload("The streaming configuration changed since this page showed it; nothing was done. Here it is now.", "bad");
      }
      failure(message, error);
      // A menu item that was picked is hidden now: focus goes back to the menu's button
      // rather than to nowhere.
      const at = document.activeElement;
      if (!at || at === document.body || at.closest("[hidden]")) menu.button.focus();
    } finally {
      panel.removeAttribute("aria-busy");
    }
  };
  let box = null;
  let keep = null;
  const confirmDelete = () => {
    // Asked once: picking Delete again goes back to the question already asked.
    if (box && box.isConnected) return keep.focus();
    // Sent once however often it is pressed: busy until the API answers.
    const remove = button(
      "Delete streaming configuration",
      () => act("DELETE", "", "Streaming configuration deleted.", { "if-match": String(view.version) }),
      { class: "danger" },
    );
    keep = button("Keep it", () => {
      box.remove();
      menu.button.focus();
    });
    box = h(
      "div",
      { class: "confirm", role: "group", "aria-label": "Delete the streaming configuration" },
      h(
        "p",
        {},
        "Delete the streaming configuration? Events stop being sent and the saved credentials are removed.",
      ),
      remove,
      keep,
    );
    message.before(box);
    keep.focus();
  };
  const menu = manageMenu([
    ["Edit streaming configuration", () => go({ ...p, view: "streaming" }, { heading: "Edit streaming configuration" })],
    health.state === "paused"
      ? ["Resume", () => act("POST", "/resume", "Streaming resumed: what was held back is on its way.")]
      : ["Pause", () => act("POST", "/pause", "Streaming paused: events are kept until you resume.")],
    ["Delete", confirmDelete],
  ]);
  panel.replaceChildren(
    h("div", { class: "panel-head" }, heading, menu.root),
    details,
    // Whatever the destination: the seed's AWS setup looks for them here, before a switch from
    // Datadog too.
    roleTrust(view),
    chart(health.hours_24h || []),
    message,
  );
}

/** What a role for Amazon CloudWatch trusts, at hand where the seed's setup looks for it. */
function roleTrust(view) {
  const copied = messageRegion();
  return h(
    "div",
    { class: "trust" },
    // Worded apart from the names on the page (the provider, the two boxes' labels).
    h("p", {}, "The role you create for a CloudWatch destination trusts these two values:"),
    trustedIds(view, copied),
    copied,
  );
}
