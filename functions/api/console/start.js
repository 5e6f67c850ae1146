// The start page: choose an organization's project.

import { call, organizationPath } from "./api.js";
import { h, field, when, say } from "./dom.js";
import { go, link, failure } from "./router.js";

export function startPage(p) {
  const org = h("input", { name: "organization_id", value: p.org, autocomplete: "off" });
  const project = h("input", { name: "project_id", value: p.project, autocomplete: "off" });
  const message = h("div", { class: "message" });
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
    list.append(status);
    page.append(list);
    call("GET", `${organizationPath(p.org)}/projects?limit=100`).then(
      (data) => {
        status.remove();
        if (!data.projects.length) list.append(h("p", {}, "No project has stored events yet."));
        list.append(
          h(
            "ul",
            {},
            data.projects.map((x) =>
              h(
                "li",
                {},
                link(x.project_id, { org: p.org, project: x.project_id }),
                ` · newest event ${when(x.newest_event_at)}`,
              ),
            ),
          ),
        );
      },
      (error) => failure(status, error),
    );
  }
  return page;
}
