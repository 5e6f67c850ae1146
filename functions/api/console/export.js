// Export: the events the search on screen selects, as a gzip file to download once it is ready.

import { call, enc, follow, projectPath } from "./api.js";
import { h, field, select, button, when, say, failure, messageRegion } from "./dom.js";

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
