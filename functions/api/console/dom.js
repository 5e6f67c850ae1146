// Building the page. Strings always become text nodes: nothing here parses markup.

/** An element with attributes, listeners (`on...`) and children (strings become text). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const svg = (tag, attributes = {}, ...children) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return append(el, children);
};

let idCount = 0;
export const newId = (stem) => `${stem}-${++idCount}`;

/** A labelled control: the label's text is the control's accessible name. */
export function field(label, control, hint) {
  control.id ||= newId("field");
  const hintEl = hint ? h("p", { class: "hint", id: newId("hint") }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** What a refusal says, said at the control it is about (see `invalid`) when it names one of
 * `controls` (the API's field names to the form's controls): the API starts a field's error
 * with its name in backticks (`cloudwatch.region`). The names it gives become the labels the
 * person reads. */
export function refused(error, controls) {
  const message = error instanceof Error ? error.message : String(error);
  const known = (name) => Object.hasOwn(controls, name) && controls[name].labels?.length;
  const worded = message.replace(/`([\w.]+)`/g, (whole, name) => (known(name) ? controls[name].labels[0].textContent : whole));
  const named = /^`([\w.]+)`/.exec(message);
  return named && known(named[1]) ? invalid(controls[named[1]], worded) : worded;
}

/** What takes back each control's mark at its next change, dropped once it has. */
const undoing = new WeakMap();

/** Says what is wrong with `control` where it is (beside it, read with it, marked invalid) and
 * puts the focus there; undone as soon as the control changes. Returns `text`. */
export function invalid(control, text) {
  valid(control);
  const note = h("p", { class: "field-error", id: newId("error") }, text);
  control.after(note);
  control.setAttribute("aria-invalid", "true");
  control.setAttribute("aria-describedby", [note.id, control.getAttribute("aria-describedby")].filter(Boolean).join(" "));
  const undo = new AbortController();
  undoing.set(control, undo);
  control.addEventListener("input", () => valid(control), { signal: undo.signal });
  control.addEventListener("change", () => valid(control), { signal: undo.signal });
  control.focus();
  return text;
}

/** Takes back what `invalid` said about every control in `container`: a form sent again is
 * judged anew. */
export function validAll(container) {
  for (const control of container.querySelectorAll('[aria-invalid="true"]')) valid(control);
}

/** Takes back what `invalid` said about `control`. */
export function valid(control) {
  undoing.get(control)?.abort();
  undoing.delete(control);
  const note = control.nextElementSibling;
  if (!note || !note.classList.contains("field-error")) return;
  note.remove();
  const rest = (control.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== note.id);
  if (rest.length) control.setAttribute("aria-describedby", rest.join(" "));
  else control.removeAttribute("aria-describedby");
  control.removeAttribute("aria-invalid");
}

/** A value to read and copy (an id): a read-only text box whose text is its value too, so it
 * reads the same as a control's value and as the page's text. */
export function readable(value) {
  return h("textarea", { readonly: true, rows: 1, spellcheck: "false", class: "readable" }, value);
}

export function select(options, value) {
  return h(
    "select",
    {},
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
}

/** A button whose `onclick` may take a while (a call to the API): a press while the last one is
 * still at work, a double click's second, does nothing, and the button says it is busy. */
export function button(text, onclick, props = {}) {
  const b = h("button", { type: "button", ...props }, text);
  b.addEventListener("click", (event) => busy(b, () => onclick(event)));
  return b;
}

/** Does `work` with `control` marked busy: pressed again meanwhile, it does nothing. Marked
 * `aria-disabled` rather than disabled, which would drop the focus it has. */
export async function busy(control, work) {
  if (control.getAttribute("aria-disabled") === "true") return;
  control.setAttribute("aria-disabled", "true");
  try {
    await work();
  } finally {
    control.removeAttribute("aria-disabled");
  }
}

/** "1 event", "2 events". */
export const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

export function when(ts) {
  if (!ts) return "—";
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return String(ts);
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** A `datetime-local` value (the person's own time) as RFC 3339, or nothing. */
export function rfc3339(local) {
  if (!local) return undefined;
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

/** What a `datetime-local` box is read in, since every time the pages show is UTC. */
export function localTime() {
  const minutes = -new Date().getTimezoneOffset();
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
  const offset = `${minutes < 0 ? "-" : "+"}${pad(minutes / 60)}:${pad(minutes % 60)}`;
  return `In your local time (UTC${offset}); the times shown are UTC.`;
}

/** A `datetime-local` value of `date` in the person's own time, to the minute (or the second,
 * for a box that takes seconds). */
export function localValue(date, withSeconds = false) {
  const pad = (n) => String(n).padStart(2, "0");
  const seconds = withSeconds ? `:${pad(date.getSeconds())}` : "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}${seconds}`;
}

/** An empty message region for `say`: in the page with its role before it says anything, as
 * screen readers read out only what changes in a region they already know. */
export const messageRegion = () => h("div", { class: "message", role: "status" });

/** Shows a "More" button while there is a `cursor` to more (kept as its `data-cursor`). Gone with
 * the last of them while it had the focus, it leaves the focus on `next`, the first thing it
 * brought, rather than nowhere. */
export function showMore(more, cursor, next) {
  const pressed = document.activeElement === more;
  more.hidden = !cursor;
  more.dataset.cursor = cursor || "";
  if (!pressed || !more.hidden || !next) return;
  if (next.tabIndex < 0 && !next.hasAttribute("tabindex")) next.setAttribute("tabindex", "-1");
  next.focus();
}

/** A message region: `status` for news, `alert` for what went wrong. */
export function say(region, text, kind = "status") {
  region.className = `message ${kind === "alert" ? "bad" : kind === "good" ? "good" : ""}`;
  region.setAttribute("role", kind === "alert" ? "alert" : "status");
  region.textContent = text;
}

/** What went wrong, in the region that was waiting for it. */
export function failure(region, error) {
  say(region, error instanceof Error ? error.message : String(error), "alert");
}

export async function copy(text, region, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(region, `${what} copied.`);
  } catch {
    say(region, `Copying is not allowed here: select the ${what} and copy it by hand.`, "alert");
  }
}
