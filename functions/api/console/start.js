// The start page: choose an organization's project.

import { call, organizationPath, query } from "./api.js";
import { h, field, button, when, say, count, failure, messageRegion, showMore } from "./dom.js";
import { go, projectLink } from "./router.js";
import { eventsSection } from "./events.js";

/** Pages one load asks for at most: its first, and the next after each that listed no project. */
const PAGES_PER_LOAD = 5;

export function startPage(p) {
  const org = h("input", { name: "organization_id", value: p.org, autocomplete: "off" });
  const project = h("input", { name: "project_id", value: p.project, autocomplete: "off" });
  const message = messageRegion();
  const form = h(
    "form",
    {
      class: "panel",
      onsubmit: (e) => {
        e.preventDefault();
        const next = { org: org.value.trim(), project: project.value.trim() };
        if (!next.org) return say(message, "Enter the Organization ID.", "alert");
        go(next);
      },
    },
    field("Organization ID", org),
    field("Project ID", project, "Leave empty to list the organization's projects."),
    h("button", { type: "submit" }, "Open"),
    message,
  );
  const page = h(
    "section",
    {},
    h("h1", { tabindex: "-1" }, "Audit Logs"),
    h("p", {}, "Open a project (an HCP Packer registry) to see its audit events and streaming."),
    form,
  );
  if (p.org) {
    const list = h("section", { class: "panel" }, h("h2", {}, "Projects with events"));
    const status = h("p", { role: "status" }, "Loading projects…");
    const projects = h("ul");
    const more = button("More projects", () => {
      say(status, "Looking for more projects…");
      return load(more.dataset.cursor);
    });
    more.hidden = true;
    list.append(status, projects, more);
    page.append(list);
    // `asked`: pages this load asked for before this one.
    const load = (cursor, asked = 0) =>
      call("GET", `${organizationPath(p.org)}/projects${query({ limit: "100", cursor })}`).then(
        (data) => {
          // A page may list none (the projects on it have no events left): the next few are
          // asked for without a press, so projects further on show as if they came first.
          if (!data.projects.length && data.next_cursor && asked + 1 < PAGES_PER_LOAD) {
            return load(data.next_cursor, asked + 1);
          }
          const links = data.projects.map((x) => projectLink(p.org, x.project_id));
          projects.append(...data.projects.map((x, i) => h("li", {}, links[i], ` · newest event ${when(x.newest_event_at)}`)));
          const shown = projects.children.length;
          say(
            status,
            shown
              ? `${count(shown, "project")}.`
              : data.next_cursor
                ? "No project with events found so far: “More projects” looks further."
                : "No project has stored events yet.",
          );
          // The last More leaves the focus on what it brought, or on what it found.
          showMore(more, data.next_cursor, links[0] ?? status);
        },
        (error) => failure(status, error),
      );
    load();
    // The organization's events, searched across its projects (the search an auditor starts
    // from: who did what, in whichever registry), never looked at again by themselves: each
    // look is one of the organization's counted searches.
    const still = () => true;
    page.append(eventsSection(p, still, { path: organizationPath(p.org) }));
  }
  return page;
}
