// The last 24 hours' deliveries as bars; the numbers are its text alternative.

import { h, svg, when } from "./dom.js";

/** The last 24 hours' deliveries, one bar per hour; the numbers are its text alternative. */
export function chart(hours) {
  const width = 24 * 12;
  const height = 60;
  const top = Math.max(1, ...hours.map((x) => x.delivered + x.failed));
  const delivered = hours.reduce((n, x) => n + x.delivered, 0);
  const failed = hours.reduce((n, x) => n + x.failed, 0);
  const bars = hours.map((x, i) => {
    const ok = (x.delivered / top) * height;
    const bad = (x.failed / top) * height;
    return svg(
      "g",
      {},
      svg("title", {}, `${when(x.hour)}: ${x.delivered} delivered, ${x.failed} failed`),
      svg("rect", { x: i * 12 + 1, y: height - ok, width: 10, height: ok, class: "delivered" }),
      svg("rect", { x: i * 12 + 1, y: height - ok - bad, width: 10, height: bad, class: "failed" }),
    );
  });
  return h(
    "figure",
    { class: "chart" },
    svg(
      "svg",
      {
        viewBox: `0 0 ${width} ${height}`,
        role: "img",
        "aria-label": `Deliveries in the last 24 hours: ${delivered} delivered, ${failed} failed`,
      },
      svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }),
      bars,
    ),
    h("figcaption", {}, "Deliveries per hour, last 24 hours (failed in red)"),
  );
}
