// The last 24 hours' deliveries as bars; the numbers are its text alternative.

import { h, newId, svg, when } from "./dom.js";

/** The last 24 hours' deliveries, one bar per hour, failed ones striped as well as red (told
 * apart without their colour); the totals are its text alternative, and each hour's numbers a
 * table to open. */
export function chart(hours) {
  const width = 24 * 12;
  const height = 60;
  const top = Math.max(1, ...hours.map((x) => x.delivered + x.failed));
  const delivered = hours.reduce((n, x) => n + x.delivered, 0);
  const failed = hours.reduce((n, x) => n + x.failed, 0);
  const stripes = newId("failed-stripes");
  const bars = hours.map((x, i) => {
    const ok = (x.delivered / top) * height;
    const bad = (x.failed / top) * height;
    return svg(
      "g",
      {},
      svg("title", {}, `${when(x.hour)}: ${x.delivered} delivered, ${x.failed} failed`),
      svg("rect", { x: i * 12 + 1, y: height - ok, width: 10, height: ok, class: "delivered" }),
      svg("rect", { x: i * 12 + 1, y: height - ok - bad, width: 10, height: bad, fill: `url(#${stripes})` }),
    );
  });
  const active = hours.filter((x) => x.delivered + x.failed > 0);
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, "Deliveries per hour, last 24 hours (failed: red and striped)"),
    svg(
      "svg",
      {
        viewBox: `0 0 ${width} ${height}`,
        role: "img",
        "aria-label": `Deliveries in the last 24 hours: ${delivered} delivered, ${failed} failed`,
      },
      svg(
        "defs",
        {},
        svg(
          "pattern",
          { id: stripes, patternUnits: "userSpaceOnUse", width: 4, height: 4 },
          svg("rect", { width: 4, height: 4, class: "failed" }),
          svg("path", { d: "M-1,1 L1,-1 M0,4 L4,0 M3,5 L5,3", class: "stripe" }),
        ),
      ),
      svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }),
      bars,
    ),
    h(
      "details",
      {},
      h("summary", {}, "Deliveries per hour"),
      active.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Hour", "Delivered", "Failed"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, active.map((x) => h("tr", {}, h("th", { scope: "row" }, when(x.hour)), h("td", {}, String(x.delivered)), h("td", {}, String(x.failed))))),
          )
        : h("p", {}, "Nothing was delivered or failed in the last 24 hours."),
    ),
  );
}
