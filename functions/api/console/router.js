// Where the person is: the address is the page's state, and links move within the page.

import { query, auth } from "./api.js";
import { h } from "./dom.js";
import { startPage } from "./start.js";
import { logsPage } from "./logs.js";
import { streamingPage } from "./streaming.js";
import { problemsPage } from "./problems.js";

export function place() {
  const q = new URLSearchParams(location.search);
  return {
    org: q.get("organization_id") || "",
    project: q.get("project_id") || "",
    view: q.get("view") || "logs",
  };
}

/** The address of page `p`, with the Audit Logs page's `search` (its query's parameters). */
export function href(p, search = {}) {
  return `${location.pathname}${query({
    organization_id: p.org,
    project_id: p.project,
    view: p.view === "logs" ? "" : p.view,
    ...search,
  })}`;
}

/** Shows page `p`; `state` rides with its history entry (what the page may know before it
 * has read anything, as `heading`). */
export function go(p, state = null) {
  // Signed out: a late answer moves nowhere.
  if (auth.signedOut) return;
  history.pushState(state, "", href(p));
  render();
}

/** A link to the Audit Logs page of `org`'s project, named by its id. */
export const projectLink = (org, project) => link(project, { org, project });

export function link(text, p, props = {}) {
  return h(
    "a",
    {
      href: href(p),
      onclick: (e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || e.button !== 0) return;
        e.preventDefault();
        go(p);
      },
      ...props,
    },
    text,
  );
}

/** News for the next page, shown once: "good" (a save went through) or "bad" (it did not). */
let notice = null;

export function announce(text, kind = "good") {
  notice = { text, kind };
}

/** The address whose page is on screen. */
let drawn = null;

/** Back or Forward: a page of another address is drawn; following a link within this one (the
 * skip link's `#main`) keeps what is on it, typed input and all. Before the console drew a
 * page (sign-in said why it stopped, or settings could not be read), that page stays. */
export function moved() {
  if (drawn !== null && location.pathname + location.search !== drawn) render();
}

/** Keeps the search page `p` shows in its address: a reload, a bookmark or a shared link shows
 * the same search. It replaces the address rather than adding one, so Back leaves the page as
 * before, and the page stays as it is. */
export function keepSearch(p, search) {
  if (auth.signedOut) return;
  const address = href(p, search);
  if (address === location.pathname + location.search) return;
  // The fragment (the skip link's) stays.
  history.replaceState(history.state, "", address + location.hash);
  drawn = location.pathname + location.search;
}

export function render() {
  // Signed out: Back or a late answer draws no page.
  if (auth.signedOut) return;
  drawn = location.pathname + location.search;
  const p = place();
  let page;
  if (!p.org || !p.project) page = startPage(p);
  else if (p.view === "streaming") page = streamingPage(p);
  else if (p.view === "problems") page = problemsPage(p);
  else page = logsPage(p);
  const main = document.getElementById("main");
  main.replaceChildren(page);
  // Said in a region that is always on the page, which screen readers follow from the start
  // (one added with its text is not read out), above every page.
  const news = document.getElementById("news");
  news.className = notice ? `news message ${notice.kind}` : "news";
  news.textContent = notice ? notice.text : "";
  notice = null;
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · Audit log service` : "Audit log service";
  // A new page starts at its heading, for keyboards and screen readers alike; the news is read
  // with it, as moving the focus may cut a live region short.
  if (heading && news.textContent) heading.setAttribute("aria-describedby", "news");
  heading?.focus();
}

export function projectHeader(p, title, current) {
  return [
    h(
      "p",
      { class: "crumbs" },
      "Organization ",
      h("code", {}, p.org),
      " · project ",
      h("code", {}, p.project),
      " · ",
      link("Change project", { org: p.org }),
    ),
    h("h1", { tabindex: "-1" }, title),
    h(
      "nav",
      { "aria-label": "Project pages", class: "tabs" },
      link("Audit Logs", { ...p, view: "logs" }, { "aria-current": current === "logs" && "page" }),
      link(
        "Delivery problems",
        { ...p, view: "problems" },
        { "aria-current": current === "problems" && "page" },
      ),
    ),
  ];
}

