// The Audit Logs page: the streaming state, the events with their filters and paging, Export.

import { call, enc, follow, projectPath, query } from "./api.js";
import { h, newId, field, select, button, when, rfc3339, say, count, failure, localTime, refused, validAll, messageRegion } from "./dom.js";
import { go, render, projectHeader, announce } from "./router.js";
import { manageMenu } from "./menu.js";
import { trustedIds } from "./streaming.js";
import { chart } from "./chart.js";

export const PROVIDERS = { cloudwatch: "Amazon CloudWatch", datadog: "Datadog" };

/** Whether the Audit Logs page shows changes as they happen, as the person last chose. */
let showingChanges = true;

export function logsPage(p) {
  const streaming = h(
    "section",
    { class: "panel", "aria-labelledby": "streaming-heading" },
    h("h2", { id: "streaming-heading" }, "Log streaming"),
    h("p", { role: "status" }, "Loading…"),
  );
  // The page changes by itself (newer events, delivery news) unless the person stops it, to read
  // without the rows moving under them (WCAG 2.2.2); stopped, it stays so when the page is drawn
  // again (after a Pause, say) until they ask for the changes again.
  const live = h("input", { type: "checkbox", id: newId("live"), checked: showingChanges, onchange: () => (showingChanges = live.checked) });
  const still = () => !live.checked;
  watchStreaming(p, streaming, still);
  return h(
    "section",
    {},
    projectHeader(p, "Audit Logs", "logs"),
    h("div", { class: "choice" }, live, h("label", { for: live.id }, "Show changes as they happen")),
    streaming,
    eventsSection(p, still),
  );
}

/** Text selected in `region`, or partly in it (to copy, say), which drawing it again would
 * lose. */
function selecting(region) {
  const selection = document.getSelection();
  return Boolean(selection && !selection.isCollapsed && selection.containsNode(region, true));
}

/** A view as the panel compares it: the seconds since the last success, which the API counts
 * anew at every answer, left out. */
function compared(view) {
  return JSON.stringify({ ...view, health: view.health && { ...view.health, seconds_since_last_success: null } });
}

/** Every `ms` while `node` is on the page, unless `busy()`: asks again (`ask`, a background
 * call) and, unless busy by then, `show`s the answer, or says it `failed`. One look at a
 * time: an answer never overtakes a later one. */
function lookAgain(node, ms, busy, ask, show, failed = () => {}) {
  let looking = false;
  const timer = setInterval(async () => {
    if (!node.isConnected) return clearInterval(timer);
    if (looking || busy()) return;
    looking = true;
    let answer = null;
    try {
      answer = await ask();
    } catch (error) {
      if (node.isConnected) failed(error);
    }
    looking = false;
    if (answer && node.isConnected && !busy()) show(answer);
  }, ms);
}

/** Says in `line` that a look again got no answer: what is shown is as of the last one that
 * did. Said once, with when it began, rather than anew (and read out anew) at every look. */
function notLooked(line, error, shown) {
  if (!line.textContent) line.textContent = `Could not look again since ${when(new Date().toISOString())} (${error.message}); ${shown}.`;
}

/** How often the streaming panel looks again at the configuration and its delivery health. */
const HEALTH_MS = 10000;

/** Draws the panel from the API's view, and again whenever the view changes (events delivered,
 * a destination failing or recovering, a change made elsewhere) while the person is not using
 * the panel: focus in it (its menu open), text selected in it, its Delete question, a Pause or
 * Resume under way, a failure it shows, its hourly table open, or the tab hidden; never while
 * `still()`. */
function watchStreaming(p, panel, still) {
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
      button("Enable Log Streaming", () => go({ ...p, view: "streaming" }), { class: "primary" }),
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
    health.next_attempt_at && ["Next attempt", when(health.next_attempt_at)],
    ["Last 24 hours", `${health.delivered_24h} delivered, ${health.failed_24h} failed`],
  ].filter(Boolean);
  const details = h(
    "dl",
    { class: "facts" },
    rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
  const reload = (text, kind) => {
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
    ["Edit streaming configuration", () => go({ ...p, view: "streaming" })],
    health.state === "paused"
      ? ["Resume", () => act("POST", "/resume", "Streaming resumed: what was held back is on its way.")]
      : ["Pause", () => act("POST", "/pause", "Streaming paused: events are kept until you resume.")],
    ["Delete", confirmDelete],
  ]);
  panel.replaceChildren(
    h("div", { class: "panel-head" }, heading, menu.root),
    details,
    ...(d.cloudwatch ? [roleTrust(view)] : []),
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

export const ACTIONS = [["", "Any action"], ["create", "create"], ["update", "update"], ["delete", "delete"], ["read", "read"]];
export const STATUSES = [["", "Any status"], ["OK", "OK"], ["FAILED", "FAILED"]];
export const RESOURCES = [["", "Any resource"], ["bucket", "bucket"], ["version", "version"], ["build", "build"], ["channel", "channel"]];

/** The resource an event is about, as the search and the CSV export name it: the most specific
 * one (a channel's assignment is about the channel, a revocation about the version). */
export function resourceOf(event) {
  for (const [kind, field] of [["channel", "channel"], ["build", "build"], ["version", "version"], ["build", "builds"], ["bucket", "bucket"]]) {
    const r = Array.isArray(event[field]) ? event[field].find((b) => b && typeof b === "object") : event[field];
    if (r && typeof r === "object") return `${kind} ${r.name || r.fingerprint || r.id || ""}`.trim();
  }
  return "—";
}

export function actorOf(event) {
  const actor = event.actor || {};
  return (actor.user && actor.user.email) || actor.principal_id || "—";
}

/** How often the first page of events is looked at again for newer ones. */
const REFRESH_MS = 5000;

export function eventsSection(p, still) {
  const inputs = {
    since: h("input", { type: "datetime-local" }),
    until: h("input", { type: "datetime-local" }),
    action: select(ACTIONS, ""),
    status: select(STATUSES, ""),
    actor: h("input", { autocomplete: "off" }),
    resource_type: select(RESOURCES, ""),
    resource_id: h("input", { autocomplete: "off" }),
    q: h("input", { type: "search", autocomplete: "off" }),
    limit: select([["25", "25"], ["50", "50"], ["100", "100"]], "50"),
  };
  const read = () => ({
    since: rfc3339(inputs.since.value),
    until: rfc3339(inputs.until.value),
    action: inputs.action.value,
    status: inputs.status.value,
    actor: inputs.actor.value.trim(),
    resource_type: inputs.resource_type.value,
    resource_id: inputs.resource_id.value.trim(),
    q: inputs.q.value.trim(),
    limit: inputs.limit.value,
  });
  // The search the table shows, once the API has answered it: a cursor belongs to the search
  // that made it, and Export exports it, whatever has been typed into the form since.
  let applied = read();
  let asked = 0;
  const table = h("div", { class: "events" });
  const status = messageRegion();
  // Said while the looks for newer events get no answer.
  const stale = h("p", { class: "hint", role: "status" });
  const heading = h("h2", { id: "events-heading", tabindex: "-1" }, "Events");
  // Cursors of the pages shown so far: the last one is the page on screen.
  let cursors = [null];
  const older = button("Older events", () => show([...cursors, older.dataset.cursor]));
  const newer = button("Newer events", () => show(cursors.slice(0, -1)));
  const pageNumber = h("span", { class: "page-number" });
  // The first page's events as drawn, as text: a look again that finds them unchanged leaves
  // the table as it is. All of them, not the newest alone: an event may come in below it (one
  // of the same second, or a late one dated earlier).
  let firstShown = null;
  const draw = (data, stack, searched) => {
    const at = document.activeElement;
    stale.textContent = "";
    applied = searched;
    cursors = stack;
    firstShown = stack.length === 1 ? JSON.stringify(data.events) : null;
    table.replaceChildren(eventsTable(data.events));
    say(status, data.events.length ? `${count(data.events.length, "event")} on this page.` : "No events match on this page.");
    older.hidden = !data.next_cursor;
    older.dataset.cursor = data.next_cursor || "";
    newer.hidden = cursors.length < 2;
    pageNumber.textContent = `Page ${cursors.length}`;
    // Paged to the last page (or back to the first), the pressed button is gone: the focus goes
    // to the other one rather than to nowhere.
    if ((at === older || at === newer) && at.hidden) ([older, newer].find((b) => !b.hidden) || heading).focus();
  };
  const show = async (stack, searched = applied) => {
    const ask = ++asked;
    say(status, "Loading events…");
    try {
      const data = await call("GET", projectPath(p) + query({ ...searched, cursor: stack[stack.length - 1] }));
      if (ask !== asked) return; // a later request's answer is the one to show
      draw(data, stack, searched);
    } catch (error) {
      // What the table shows stays, with its search: the refusal says why the new one is not,
      // at the box it is about when it is about one.
      if (ask !== asked) return;
      say(status, refused(error, inputs), "alert");
    }
  };
  // Events keep coming while the page is open: the first page is looked at again every few
  // seconds and drawn anew when it has newer events, unless the person is elsewhere (another
  // page of events, another tab), in the table (an event's JSON open, focus or selected text
  // in it) or has stopped the page's changes (`still`).
  const away = () =>
    still() ||
    document.hidden ||
    cursors.length !== 1 ||
    table.querySelector("tr.json:not([hidden])") ||
    table.contains(document.activeElement) ||
    selecting(table);
  const firstPage = () => {
    const [ask, searched] = [asked, applied];
    return call("GET", projectPath(p) + query({ ...searched, cursor: null }), undefined, {}, { background: true }).then(
      (data) => ({ data, ask, searched }),
    );
  };
  lookAgain(
    table,
    REFRESH_MS,
    away,
    firstPage,
    ({ data, ask, searched }) => {
      stale.textContent = "";
      // A search started meanwhile, or answered meanwhile, keeps what it shows.
      if (ask !== asked || searched !== applied) return;
      if (JSON.stringify(data.events) !== firstShown) draw(data, [null], searched);
    },
    (error) => {
      notLooked(stale, error, "newer events are not shown until a look gets one");
    },
  );
  const search = h(
    "form",
    {
      role: "search",
      "aria-label": "Search events",
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        validAll(search);
        show([null], read());
      },
    },
    field("Since", inputs.since, localTime()),
    field("Until", inputs.until, localTime()),
    field("Action", inputs.action),
    field("Status", inputs.status),
    field("Actor", inputs.actor, "principal id or e-mail, exact"),
    field("Resource type", inputs.resource_type),
    field("Resource ID", inputs.resource_id),
    field("Text", inputs.q, "in descriptions and resource names"),
    field("Per page", inputs.limit),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search"), button("Clear", () => {
      search.reset();
      validAll(search);
      show([null], read());
    })),
  );
  older.hidden = true;
  newer.hidden = true;
  show([null]);
  return h(
    "section",
    { class: "panel", "aria-labelledby": "events-heading" },
    heading,
    search,
    exportControls(p, () => applied),
    status,
    stale,
    table,
    h("div", { class: "pager" }, newer, pageNumber, older),
  );
}

export function eventsTable(events) {
  if (!events.length) return h("p", {}, "No events.");
  const body = h("tbody");
  for (const event of events) {
    // Named and focusable: a long line scrolls sideways, which a keyboard can then do too.
    const pre = () =>
      h(
        "pre",
        { tabindex: "0", role: "region", "aria-label": `The ${String(event.action ?? "")} event of ${when(event.timestamp)} as JSON` },
        JSON.stringify(event, null, 2),
      );
    // On the page only while shown: hidden, every name in it would be the page's text twice.
    const cell = h("td", { colspan: 7 });
    const json = h("tr", { class: "json", hidden: true }, cell);
    // Fifty of them on a page: each is described by its row's time and description.
    const [time, description] = [newId("time"), newId("description")];
    const toggle = button("Show JSON", () => {
      json.hidden = !json.hidden;
      cell.replaceChildren(...(json.hidden ? [] : [pre()]));
      toggle.setAttribute("aria-expanded", String(!json.hidden));
      toggle.textContent = json.hidden ? "Show JSON" : "Hide JSON";
    }, { "aria-expanded": "false", "aria-describedby": `${time} ${description}` });
    body.append(
      h(
        "tr",
        {},
        h("th", { scope: "row", class: "nowrap", id: time }, when(event.timestamp)),
        h("td", {}, String(event.action ?? "")),
        h("td", { class: event.status === "FAILED" ? "bad" : "" }, String(event.status ?? "")),
        h("td", { id: description }, String(event.description ?? "")),
        h("td", {}, actorOf(event)),
        h("td", {}, resourceOf(event)),
        h("td", {}, toggle),
      ),
      json,
    );
  }
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
    h("thead", {}, h("tr", {}, ["Time", "Action", "Status", "Description", "Actor", "Resource", "Event"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
}

export function exportControls(p, filters) {
  const format = select([["ndjson", "NDJSON (gzip)"], ["csv", "CSV (gzip)"]], "ndjson");
  const status = messageRegion();
  const show = (job) => {
    if (job.state === "completed") {
      status.replaceChildren(
        `Export ready: ${job.events} events, ${(job.bytes / 1e6).toFixed(2)} MB. `,
        h("a", { href: job.download_url, download: "" }, "Download export"),
        ` (the link works until ${when(job.expires_at)})`,
      );
      // A completed export says what it could not hold.
      if (job.error) status.append(h("p", { role: "alert" }, job.error));
    } else if (job.state === "failed") {
      say(status, `Export failed: ${job.error || "no reason given"}`, "alert");
    } else {
      say(status, `Export running: ${job.events} events so far…`);
      // One without a step for a while says why: it waits its turn, or its step was lost.
      if (job.error) status.append(h("p", {}, job.error));
    }
    return job.state !== "running";
  };
  const start = async () => {
    // The search on screen, without its page size; what is not set is left out.
    const { limit, ...search } = filters();
    const body = Object.fromEntries(Object.entries({ format: format.value, ...search }).filter(([, v]) => v));
    try {
      const job = await call("POST", `${projectPath(p)}/exports`, body);
      say(status, "Export started…");
      // Export stays busy until this one is done: one export at a time from this page.
      await follow(status, `${projectPath(p)}/exports/${enc(job.id)}`, show);
    } catch (error) {
      failure(status, error);
    }
  };
  return h("div", { class: "export" }, field("Export format", format), button("Export", start), status);
}
