// The Audit Logs page: the Log streaming panel above the events, both changing by themselves
// unless the person stops them.

import { h, newId } from "./dom.js";
import { projectHeader } from "./router.js";
import { watchStreaming } from "./streaming-panel.js";
import { eventsSection } from "./events.js";

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
