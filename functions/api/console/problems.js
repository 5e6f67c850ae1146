// Delivery problems: failed events, replays with their progress, the last connection tests.

import { call, enc, follow, projectPath, query } from "./api.js";
import { h, newId, field, button, when, rfc3339, localValue, localTime, say, count, failure, refused, validAll, messageRegion, showMore, busy } from "./dom.js";
import { projectHeader } from "./router.js";
import { PROVIDERS } from "./streaming.js";

export function problemsPage(p) {
  const failures = failuresSection(p);
  // A finished replay changes which events failed: the list is read again.
  return h("section", {}, projectHeader(p, "Delivery problems", "problems"), failures.section, replaySection(p, failures.reload), testsSection(p));
}

export function failuresSection(p) {
  const body = h("tbody");
  const status = messageRegion();
  const more = button("More failures", () => load(more.dataset.cursor));
  more.hidden = true;
  let asked = 0;
  // Without a cursor: the list from its start, replacing what is shown.
  const load = async (cursor) => {
    const ask = ++asked;
    try {
      const data = await call("GET", `${projectPath(p)}/streaming/failures${query({ limit: "50", cursor })}`);
      if (ask !== asked) return;
      if (!cursor) body.replaceChildren();
      const rows = data.failures.map((f) => {
        const e = f.event || {};
        return h("tr", {}, h("td", { class: "nowrap" }, when(e.timestamp)), h("td", {}, String(e.description ?? f.event_id)), h("td", { class: "nowrap" }, when(f.failed_at)), h("td", {}, String(f.reason ?? "")));
      });
      body.append(...rows);
      say(status, body.children.length ? `${count(body.children.length, "failed event")} listed.` : "No failed events: every event reached the destination or is still owed to it.");
      showMore(more, data.next_cursor, rows[0]);
    } catch (error) {
      if (ask === asked) failure(status, error);
    }
  };
  load();
  const section = h(
    "section",
    { class: "panel", "aria-labelledby": "failures-heading" },
    h("h2", { id: "failures-heading" }, "Failed events"),
    h("p", {}, "Events the destination did not take within the retry window. Replay sends them again."),
    status,
    h("table", {}, h("thead", {}, h("tr", {}, ["Event time", "Description", "Failed at", "Reason"].map((c) => h("th", { scope: "col" }, c)))), body),
    more,
  );
  return { section, reload: () => load() };
}

/** `finished`: called once a replay started here has ended. */
export function replaySection(p, finished = () => {}) {
  const now = new Date();
  const day = 24 * 3600 * 1000;
  // A range is of the events' own times, and an event fails only after the retry window (a
  // week by default): failed ones are looked for over the longest range a replay takes, all
  // events over the last day, until the person sets Since.
  const sinceFor = (failedOnly) => localValue(new Date(now - (failedOnly ? 365 : 1) * day));
  let sinceSet = false;
  const since = h("input", { type: "datetime-local", value: sinceFor(true), oninput: () => (sinceSet = true) });
  const until = h("input", { type: "datetime-local", value: localValue(new Date(now.getTime() + 60 * 1000)) });
  const onlyFailed = h("input", {
    type: "checkbox",
    id: newId("only-failed"),
    checked: true,
    onchange: () => {
      if (!sinceSet) since.value = sinceFor(onlyFailed.checked);
    },
  });
  const status = messageRegion();
  const submit = h("button", { type: "submit", class: "primary" }, "Replay");
  const show = (replay) => {
    const counts = `${replay.delivered} delivered, ${replay.failed} failed`;
    if (replay.state === "completed") say(status, `Replay completed: ${counts}.`, "good");
    else if (replay.state === "failed") say(status, `Replay failed (${counts}): ${replay.last_error || "no reason given"}`, "alert");
    // A running replay may say why it has not moved (waiting behind others) or what its last page met.
    else say(status, `Replay running: ${counts} so far…${replay.last_error ? ` ${replay.last_error}` : ""}`);
    if (replay.state === "running") return false;
    finished();
    return true;
  };
  const form = h(
    "form",
    {
      onsubmit: (e) => {
        e.preventDefault();
        // One replay at a time from here: a second press (a double click) would start another.
        busy(submit, async () => {
          validAll(form);
          try {
            const replay = await call("POST", `${projectPath(p)}/streaming/replay`, {
              since: rfc3339(since.value),
              until: rfc3339(until.value),
              only_failed: onlyFailed.checked,
            });
            say(status, "Replay started…");
            await follow(status, `${projectPath(p)}/streaming/replays/${enc(replay.replay_id)}`, show);
          } catch (error) {
            // At the box it is about, when it is about one.
            say(status, refused(error, { since, until }), "alert");
          }
        });
      },
    },
    field("Since", since, localTime()),
    field("Until", until, localTime()),
    h("div", { class: "choice" }, onlyFailed, h("label", { for: onlyFailed.id }, "Only failed events")),
    submit,
    status,
  );
  return h(
    "section",
    { class: "panel", "aria-labelledby": "replay-heading" },
    h("h2", { id: "replay-heading" }, "Replay"),
    h("p", {}, "Sends stored events of a time range to the saved destination again: only the failed ones, or all of them."),
    form,
  );
}

export function testsSection(p) {
  const region = h("div", {}, h("p", { role: "status" }, "Loading…"));
  call("GET", `${projectPath(p)}/streaming/tests`).then(
    (data) =>
      region.replaceChildren(
        data.tests.length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Tested at", "Provider", "Result", "Message"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                {},
                data.tests.map((t) =>
                  h("tr", {}, h("td", { class: "nowrap" }, when(t.tested_at)), h("td", {}, PROVIDERS[t.provider] || t.provider), h("td", { class: t.success ? "good" : "bad" }, t.success ? "succeeded" : "failed"), h("td", {}, t.message)),
                ),
              ),
            )
          : h("p", {}, "No connection tests in the last 30 days."),
      ),
    (error) => failure(region, error),
  );
  return h(
    "section",
    { class: "panel", "aria-labelledby": "tests-heading" },
    h("h2", { id: "tests-heading" }, "Last connection tests"),
    region,
  );
}
