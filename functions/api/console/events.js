// The Audit Logs page's events: the search, the pages of stored events newest first, each one's
// JSON, and the first page looked at again for newer events.

import { call, projectPath, query } from "./api.js";
import { h, newId, field, select, button, when, rfc3339, say, count, localTime, localValue, refused, validAll, messageRegion } from "./dom.js";
import { keepSearch, projectLink } from "./router.js";
import { exportControls } from "./export.js";
import { selecting, lookAgain, notLooked } from "./look.js";

const ACTIONS = [["", "Any action"], ["create", "create"], ["update", "update"], ["delete", "delete"], ["read", "read"]];
const STATUSES = [["", "Any status"], ["OK", "OK"], ["FAILED", "FAILED"]];
const RESOURCES = [["", "Any resource"], ["bucket", "bucket"], ["version", "version"], ["build", "build"], ["channel", "channel"]];

/** The resource an event is about, as the search and the CSV export name it: the most specific
 * one (a channel's assignment is about the channel, a revocation about the version). */
function resourceOf(event) {
  for (const [kind, field] of [["channel", "channel"], ["build", "build"], ["version", "version"], ["build", "builds"], ["bucket", "bucket"]]) {
    const r = Array.isArray(event[field]) ? event[field].find((b) => b && typeof b === "object") : event[field];
    if (r && typeof r === "object") return `${kind} ${r.name || r.fingerprint || r.id || ""}`.trim();
  }
  return "—";
}

function actorOf(event) {
  const actor = event.actor || {};
  return (actor.user && actor.user.email) || actor.principal_id || "—";
}

/** How often the first page of events is looked at again for newer ones. */
const REFRESH_MS = 5000;

/** Events per page unless the person chose otherwise (left out of the address). */
const DEFAULT_LIMIT = "50";

/** The search form as the address says (one kept by `keepSearch`): a time that is not one, or a
 * choice the form does not offer, is left out. A time with seconds (made by hand) keeps them,
 * its box taking seconds too. */
function fill(inputs, given) {
  for (const name of ["since", "until"]) {
    const date = new Date(given.get(name) ?? "");
    if (Number.isNaN(date.getTime())) continue;
    const seconds = date.getSeconds() !== 0;
    if (seconds) inputs[name].step = "1";
    inputs[name].value = localValue(date, seconds);
  }
  for (const name of ["actor", "resource_id", "q"]) inputs[name].value = given.get(name) ?? "";
  for (const name of ["action", "status", "resource_type", "limit"]) {
    const value = given.get(name);
    if ([...inputs[name].options].some((o) => o.value === value)) inputs[name].value = value;
  }
}

/** The events of project `p`; or, `across` its organization's projects (its listing's `path`),
 * each row naming its project, without Export (a project's own). */
export function eventsSection(p, still, across = null) {
  const path = across ? across.path : projectPath(p);
  const inputs = {
    since: h("input", { type: "datetime-local" }),
    until: h("input", { type: "datetime-local" }),
    action: select(ACTIONS, ""),
    status: select(STATUSES, ""),
    actor: h("input", { autocomplete: "off" }),
    resource_type: select(RESOURCES, ""),
    resource_id: h("input", { autocomplete: "off" }),
    q: h("input", { type: "search", autocomplete: "off" }),
    limit: select([["25", "25"], ["50", "50"], ["100", "100"]], DEFAULT_LIMIT),
  };
  fill(inputs, new URLSearchParams(location.search));
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
  const heading = h("h2", { id: "events-heading", tabindex: "-1" }, across ? "Events of every project" : "Events");
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
    // A late answer to a page the person has left keeps nothing in the address of the next.
    if (table.isConnected) keepSearch(p, { ...searched, limit: searched.limit === DEFAULT_LIMIT ? "" : searched.limit });
    cursors = stack;
    firstShown = stack.length === 1 ? JSON.stringify(data.events) : null;
    table.replaceChildren(eventsTable(data.events, across && p.org));
    // A filtered page reads a share of the events and may hold none: the older ones are still
    // to be searched, which "Older events" does.
    const none = data.next_cursor ? "No events match among those searched so far: “Older events” searches further back." : "No events match on this page.";
    say(status, data.events.length ? `${count(data.events.length, "event")} on this page.` : none);
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
      const data = await call("GET", path + query({ ...searched, cursor: stack[stack.length - 1] }));
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
    return call("GET", path + query({ ...searched, cursor: null }), undefined, {}, { background: true }).then(
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
      // A search started meanwhile, or answered meanwhile, keeps what it shows; so does a
      // refused one, whose alert says why the table still shows the search before it.
      if (ask !== asked || searched !== applied || status.getAttribute("role") === "alert") return;
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
  // Across an organization's projects a page is a costly search, counted: made when asked for
  // (Search, or an address that holds one), not by every visit.
  const given = new URLSearchParams(location.search);
  if (!across || Object.keys(inputs).some((name) => name !== "limit" && given.get(name))) show([null]);
  else say(status, "Search the organization's events across its projects: set the filters you need, then Search.");
  return h(
    "section",
    { class: "panel", "aria-labelledby": "events-heading" },
    heading,
    search,
    across ? null : exportControls(p, () => applied),
    status,
    stale,
    table,
    h("div", { class: "pager" }, newer, pageNumber, older),
  );
}

/** `org`: the organization whose projects' events these are, each row linking to its project. */
function eventsTable(events, org) {
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
    const cell = h("td", { colspan: org ? 8 : 7 });
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
        org ? h("td", {}, projectLink(org, String(event.project_id ?? ""))) : null,
        h("td", {}, toggle),
      ),
      json,
    );
  }
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
    h("thead", {}, h("tr", {}, ["Time", "Action", "Status", "Description", "Actor", "Resource", org ? "Project" : null, "Event"].filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
}
