// The console: the Audit Logs, Enable Log Streaming and Delivery problems pages, over the
// audit-log HTTP API and nothing else.
//
// Audit events are other people's text. Everything that came from an event or from the API
// reaches the page as text (`append` of strings, `textContent`, `value`), never as markup, and
// the page's Content-Security-Policy runs no script but the console's own files. The API key a person types
// lives in its input only: it is sent with Test connection or Save and never kept anywhere.
//
// This file starts the console; each page is a module of its own (see router.js).
import { h, failure } from "./dom.js";
import { ensureSignedIn } from "./sign-in.js";
import { render, moved } from "./router.js";
import { config } from "./api.js";

window.addEventListener("popstate", moved);
try {
  if (config.unreadable) {
    throw new Error(`The console's settings could not be read (${config.unreadable.message}); reload the page.`);
  }
  if (await ensureSignedIn()) render();
} catch (error) {
  const region = h("div");
  document.getElementById("main").replaceChildren(h("h1", {}, "Audit Logs"), region);
  document.getElementById("news").replaceChildren();
  failure(region, error);
}
