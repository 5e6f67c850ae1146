// The pages' looks again: what a page on screen asks the API anew by itself, and when it holds
// back (the person reading, selecting, or busy in it).

import { when } from "./dom.js";

/** Text selected in `region`, or partly in it (to copy, say), which drawing it again would
 * lose. */
export function selecting(region) {
  const selection = document.getSelection();
  return Boolean(selection && !selection.isCollapsed && selection.containsNode(region, true));
}

/** Every `ms` while `node` is on the page, unless `busy()`: asks again (`ask`, a background
 * call) and, unless busy by then, `show`s the answer, or says it `failed`. One look at a
 * time: an answer never overtakes a later one. */
export function lookAgain(node, ms, busy, ask, show, failed = () => {}) {
  let looking = false;
  const timer = setInterval(async () => {
    if (!node.isConnected) return clearInterval(timer);
    if (looking || busy()) return;
    looking = true;
    let answer = null;
    try {
      answer = await ask();
    } catch (error) {
      if (node.isConnected) failed(error);
    }
    looking = false;
    if (answer && node.isConnected && !busy()) show(answer);
  }, ms);
}

/** Says in `line` that a look again got no answer: what is shown is as of the last one that
 * did. Said once, with when it began, rather than anew (and read out anew) at every look. */
export function notLooked(line, error, shown) {
  if (!line.textContent) line.textContent = `Could not look again since ${when(new Date().toISOString())} (${error.message}); ${shown}.`;
}
