// The console end to end: headless Chromium against `./scripts/local --serve`, finding every
// control by the seed's words (its accessible name), as a person reads them.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { gunzipSync } from "node:zlib";
import {
  REFUSED_KEY,
  ROLE_ARN,
  auditEvent,
  browser,
  cloudWatchMessages,
  datadogEntries,
  eventually,
  page,
  screenshot,
  send,
  serve,
  unique,
} from "./support.mjs";

let server;
let chrome;

before(async () => {
  server = await serve();
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await server?.stop();
});

const ORG = "7d3f0c4e-console-tests";
const open = (p, project, view = "") =>
  p.goto(`${server.console}?organization_id=${ORG}&project_id=${project}${view ? `&view=${view}` : ""}`);
const button = (p, name) => p.getByRole("button", { name, exact: true });
const label = (p, name) => p.getByLabel(name, { exact: true });

/** Waits for `text` to be shown (polled by the browser, up to `seconds`). */
async function shows(p, text, seconds = 30) {
  await p.getByText(text).first().waitFor({ state: "visible", timeout: seconds * 1000 });
}

/** Reloads the Audit Logs page until it shows `text`: delivery runs in the background. */
async function reloadUntil(p, text, seconds = 90) {
  await eventually(`the page showing "${text}"`, async () => {
    await p.reload();
    await shows(p, "Last 24 hours", 10);
    return (await p.locator("main").innerText()).includes(text);
  }, seconds);
}

/** Save, and back on Audit Logs with the news. */
async function save(p) {
  await button(p, "Save").click();
  await shows(p, "Streaming configuration saved.");
}

/** Picks `item` from the Manage menu, with the pointer. */
async function manage(p, item) {
  await button(p, "Manage").click();
  await p.getByRole("menuitem", { name: item }).click();
}

/** The Log streaming panel's text, once it has loaded the configuration. */
async function streamingPanel(p) {
  const panel = p.getByRole("region", { name: "Log streaming" });
  await panel.getByText("Destination name").waitFor();
  return panel.innerText();
}

/** What a control's description says (`aria-describedby`), as a screen reader reads it with it. */
const described = (control) =>
  control.evaluate((el) => (el.getAttribute("aria-describedby") || "").split(" ").map((id) => document.getElementById(id)?.textContent).join(" "));

const focused = (control) => control.evaluate((el) => el === document.activeElement);

function noProblems(p) {
  assert.deepEqual(p.problems, [], "the page ran into no script error and opened no dialog");
}

test("the seed's Amazon CloudWatch flow, from an empty project to events arriving", async () => {
  const p = await page(chrome);
  const project = unique("cloudwatch");
  await open(p, project);
  await shows(p, "Log streaming is off");
  await screenshot(p, "audit-logs-empty");
  // The seed's AWS setup takes the AWS ID and External ID "from the Audit Logs page": each is
  // there once, read alike as its box's value and as the page's text.
  const listed = {};
  for (const name of ["AWS ID", "External ID"]) {
    listed[name] = await label(p, name).inputValue();
    assert.equal(await label(p, name).textContent(), listed[name]);
    assert.equal(await p.getByText(listed[name], { exact: true }).count(), 1, name);
    assert.ok(await p.getByText(listed[name], { exact: true }).isVisible(), name);
  }
  await button(p, "Enable Log Streaming").click();
  await p.getByRole("heading", { name: "Enable Log Streaming" }).waitFor();
  await p.getByRole("radio", { name: "Amazon CloudWatch" }).check();
  // Only the chosen provider's fields are on the page: "Datadog" names the one radio, not the
  // site's box too.
  assert.equal(await p.getByLabel("Datadog").count(), 1);
  // Each of the seed's words is one element's text, however a checker looks for it (as part of
  // a longer text too): the fields' legend and hints are worded apart.
  for (const name of ["Amazon CloudWatch", "Datadog", "Destination name", "Role ARN", "AWS region", "Test connection", "Save"]) {
    assert.equal(await p.getByText(name).count(), 1, name);
  }

  const awsId = await label(p, "AWS ID").inputValue();
  const externalId = await label(p, "External ID").inputValue();
  assert.match(awsId, /^\d{12}$/);
  assert.ok(externalId.length >= 22, externalId);
  assert.deepEqual({ "AWS ID": awsId, "External ID": externalId }, listed);
  await p.context().grantPermissions(["clipboard-read", "clipboard-write"]);
  await button(p, "Copy External ID").click();
  await shows(p, "External ID copied.");
  assert.equal(await p.evaluate(() => navigator.clipboard.readText()), externalId);
  // The role's policies and the Terraform that makes the role, filled in with them.
  await p.getByText("Create the IAM policy and role").click();
  const trust = await label(p, "Trust policy").innerText();
  assert.equal(JSON.parse(trust).Statement[0].Condition.StringEquals["sts:ExternalId"], externalId);
  assert.match(JSON.parse(trust).Statement[0].Principal.AWS, new RegExp(`:${awsId}:root$`));
  const policy = JSON.parse(await label(p, "IAM policy").innerText());
  assert.ok(policy.Statement.some((s) => String(s.Resource).includes("log-group:/hashicorp/")));
  // Whole, nothing to fetch: its two documents are those shown, with the account and partition
  // left to Terraform (shown as "aws" and "*" before a role ARN is typed).
  const terraform = await label(p, "Terraform").innerText();
  assert.doesNotMatch(terraform, /\bsource\b|\bmodule\b/, terraform);
  const documents = [...terraform.matchAll(/<<-EOT\n([\s\S]*?)\n {2}EOT\n/g)].map(([, body]) =>
    JSON.parse(
      body
        .replaceAll("${data.aws_partition.hcp_log_streaming.partition}", "aws")
        .replaceAll("${data.aws_caller_identity.hcp_log_streaming.account_id}", "*"),
    ),
  );
  assert.deepEqual(documents, [JSON.parse(trust), policy]);
  assert.match(terraform, /output "hcp_log_streaming_role_arn"/);
  assert.doesNotMatch(terraform, /"current"/, "names that paste beside a configuration's own");
  // Closed again, they leave the page: the External ID is its text once more, not three times.
  await p.getByText("Create the IAM policy and role").click();
  await label(p, "Trust policy").waitFor({ state: "detached" });
  assert.equal(await p.getByText(externalId, { exact: true }).count(), 1);
  // Before a role ARN is typed, the partition is the chosen region's, and follows it.
  await label(p, "AWS region").selectOption("cn-north-1");
  await p.getByText("Create the IAM policy and role").click();
  assert.match(JSON.parse(await label(p, "Trust policy").innerText()).Statement[0].Principal.AWS, /^arn:aws-cn:iam::/);
  await label(p, "AWS region").selectOption("us-gov-west-1");
  assert.ok(JSON.parse(await label(p, "IAM policy").innerText()).Statement.every((s) => [s.Resource].flat().every((r) => r.startsWith("arn:aws-us-gov:"))));
  await p.getByText("Create the IAM policy and role").click();

  await label(p, "Destination name").fill("prod-audit");
  await label(p, "Role ARN").fill(ROLE_ARN);
  await label(p, "AWS region").selectOption("us-east-1");
  await screenshot(p, "enable-log-streaming-cloudwatch");
  await button(p, "Test connection").click();
  await shows(p, "Success: connection established");
  assert.match(await p.getByRole("status").filter({ hasText: "connection established" }).innerText(), /audit-logs-test/);
  // The first save is conditional on nothing being saved (version 0): one someone else made
  // meanwhile is not replaced unseen.
  const saves = [];
  p.on("request", (r) => {
    if (r.method() === "PUT" && r.url().endsWith("/streaming")) saves.push(r.headers()["if-match"]);
  });
  await save(p);
  assert.deepEqual(saves, ["0"]);
  assert.match(await streamingPanel(p), /Amazon CloudWatch[\s\S]*prod-audit/);
  // The provider is named once on the page, beside the ids its role trusts.
  assert.equal(await p.getByText("Amazon CloudWatch").count(), 1);
  assert.equal(await label(p, "External ID").inputValue(), externalId);

  // Events of the project arrive in the customer's log group, and the page says so.
  const descriptions = [1, 2, 3].map((n) => `console cloudwatch event ${n} of ${project}`);
  await send(server, descriptions.map((d) => auditEvent(ORG, project, d)));
  // They appear on the open page by themselves, without a reload.
  for (const d of descriptions) await p.getByText(d).waitFor({ timeout: 60_000 });
  await eventually("the events in the customer's CloudWatch Logs", async () => {
    const messages = await cloudWatchMessages(server);
    return descriptions.every((d) => messages.some((m) => JSON.parse(m).description === d));
  });
  // The configuration's own audit event ("Created streaming configuration") went too, and the
  // Log streaming panel says so by itself too, without a reload.
  await p.getByRole("region", { name: "Log streaming" }).getByText("4 delivered, 0 failed", { exact: true }).waitFor({ timeout: 90_000 });
  for (const d of descriptions) await shows(p, d);
  const chart = await p.getByRole("img", { name: /Deliveries in the last 24 hours/ }).getAttribute("aria-label");
  assert.match(chart, /4 delivered, 0 failed/);
  // Each hour's numbers, to read without the pointer the bars' titles need.
  await p.getByText("Deliveries per hour", { exact: true }).click();
  const hourly = p.getByRole("region", { name: "Log streaming" }).getByRole("table");
  const cells = await hourly.getByRole("row").evaluateAll((rows) => rows.slice(1).map((r) => [...r.cells].map((c) => c.textContent)));
  assert.ok(cells.every(([hour]) => / UTC$/.test(hour)), JSON.stringify(cells));
  assert.equal(cells.reduce((n, [, delivered]) => n + Number(delivered), 0), 4, JSON.stringify(cells));
  await screenshot(p, "audit-logs");

  // One event's whole JSON, on demand (and on the page only while shown: the saved
  // destination's name, in its audit event, is the page's text once until then).
  assert.equal(await p.locator("tr.json pre").count(), 0);
  assert.equal(await p.getByText("prod-audit").count(), 1);
  await button(p, "Show JSON").first().click();
  const shown = p.locator("tr.json:not([hidden]) pre");
  const json = JSON.parse(await shown.innerText());
  assert.equal(json.project_id, project);
  // Named for a screen reader, and reachable with Tab to scroll it.
  assert.match(await shown.getAttribute("aria-label"), new RegExp(`^The ${json.action} event of .+ as JSON$`));
  assert.equal(await shown.getAttribute("tabindex"), "0");
  await button(p, "Hide JSON").click();
  assert.equal(await p.locator("tr.json pre").count(), 0);

  // An hour with failures (handed to the page: failing takes a refusing role) is striped as
  // well as red, told apart without its colour: its bar is filled with the chart's stripes.
  await p.route("**/streaming", async (route) => {
    if (route.request().method() !== "GET") return route.fallback();
    const response = await route.fetch();
    const view = await response.json();
    const hours = view.health.hours_24h;
    hours[hours.length - 1] = { ...hours[hours.length - 1], failed: 2 };
    await route.fulfill({ response, json: view });
  });
  await p.reload();
  await p.getByRole("img", { name: /4 delivered, 2 failed/ }).waitFor();
  const fills = await p.locator(".chart svg").evaluate((svg) =>
    [...svg.querySelectorAll("g rect[fill]")]
      .filter((bar) => Number(bar.getAttribute("height")) > 0)
      .map((bar) => svg.querySelector(`pattern[id="${/^url\(#(.+)\)$/.exec(bar.getAttribute("fill"))?.[1]}"] path.stripe`) !== null),
  );
  assert.deepEqual(fills, [true], "one failed bar, filled with the stripes");
  await p.unroute("**/streaming");
  noProblems(p);
  await p.context().close();
});

test("the seed's Datadog flow, and the API key is never shown or kept after saving", async () => {
  const p = await page(chrome);
  const project = unique("datadog");
  const key = "0123456789abcdef0123456789abcdef";
  await open(p, project);
  await button(p, "Enable Log Streaming").click();
  await p.getByRole("radio", { name: "Datadog" }).check();
  assert.equal(await label(p, "Role ARN").count(), 0, "CloudWatch's fields are gone");
  // "Datadog" as text is the radio's label alone; "API Key" the field's label alone (its hint
  // and the fields' legend are worded apart).
  assert.equal(await p.getByText("Datadog", { exact: true }).count(), 1);
  assert.equal(await p.getByText("API Key").count(), 1);
  await label(p, "Destination name").fill("dd-eu");
  await label(p, "API Key").fill(key);
  await label(p, "Datadog site").selectOption("datadoghq.eu");
  await screenshot(p, "enable-log-streaming-datadog");
  await button(p, "Test connection").click();
  await shows(p, "Success: connection established");
  await save(p);
  await shows(p, "ending in cdef");
  // The AWS ID and External ID stay on the Audit Logs page, for a switch to Amazon CloudWatch.
  assert.match(await label(p, "External ID").inputValue(), /.{22,}/);
  assert.match(await label(p, "AWS ID").inputValue(), /^\d{12}$/);

  const descriptions = [1, 2].map((n) => `console datadog event ${n} of ${project}`);
  await send(server, descriptions.map((d) => auditEvent(ORG, project, d)));
  await eventually("the events at the Datadog stand-in", async () => {
    const entries = await datadogEntries(server);
    return descriptions.every((d) => entries.some((e) => e.description === d || e.message?.includes?.(d)));
  });
  await reloadUntil(p, "3 delivered, 0 failed");

  // Editing shows the last four characters only, and nothing keeps the key.
  await manage(p, "Edit streaming configuration");
  await p.getByRole("heading", { name: "Edit streaming configuration" }).waitFor();
  assert.equal(await label(p, "API Key").inputValue(), "");
  await shows(p, "The key on file ends in cdef");
  const html = await p.content();
  assert.ok(!html.includes(key), "the page holds no saved key");
  const values = await p.locator("input").evaluateAll((inputs) => inputs.map((i) => i.value));
  assert.ok(!values.includes(key), "no input holds the saved key");
  const stored = await p.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  assert.ok(!stored.includes(key), "browser storage holds no key");
  // Nor may a password manager fill one in, where empty keeps the saved key.
  assert.equal(await label(p, "API Key").getAttribute("autocomplete"), "new-password");

  // Rotating the key, as the seed's "Updating streaming configuration" does.
  await label(p, "API Key").fill("ffffffffffffffffffffffffffff9999");
  await button(p, "Test connection").click();
  await shows(p, "Success: connection established");
  await save(p);
  await shows(p, "ending in 9999");
  noProblems(p);
  await p.context().close();
});

test("the Log streaming panel says when it could not look, and looks again by itself", async () => {
  const p = await page(chrome);
  const project = unique("stale");
  let refusing = true;
  await p.route(
    (url) => url.pathname.endsWith("/streaming"),
    (route) =>
      refusing && route.request().method() === "GET"
        ? route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ error: { code: "internal", message: "The view is out for now." } }) })
        : route.fallback(),
  );
  // The first look gets no view: said, and looked at again until one comes.
  await open(p, project);
  await shows(p, "The view is out for now.");
  refusing = false;
  await shows(p, "Log streaming is off");
  // A later look that gets none says so, and the panel stays as it was; the next that gets
  // one takes that back.
  refusing = true;
  await shows(p, "Could not look again since");
  assert.ok(await p.getByText("Log streaming is off").isVisible());
  refusing = false;
  await p.getByText("Could not look again since").waitFor({ state: "detached", timeout: 30_000 });
  // The time boxes say whose time they are read in, the pages' times being UTC.
  for (const name of ["Since", "Until"]) {
    const hint = await label(p, name).getAttribute("aria-describedby");
    assert.match(await p.locator(`[id="${hint}"]`).innerText(), /^In your local time \(UTC[+-]\d\d:\d\d\); the times shown are UTC\.$/);
  }
  noProblems(p);
  await p.context().close();
});

/** Whether the API lists an event of `project` with `description` (stored by capture). */
async function stored(project, description) {
  const url = new URL(`/v1/organizations/${ORG}/projects/${project}/audit-logs`, server.console);
  const page = await fetch(url, { headers: { "x-organization-id": ORG } }).then((r) => r.json());
  return page.events.some((e) => e.description === description);
}

test("the Audit Logs page stops changing by itself when the person asks it to", async () => {
  const p = await page(chrome);
  const project = unique("still");
  // The page's clock moves when told: its looks again come without waiting for them.
  await p.clock.install();
  const shownFirst = auditEvent(ORG, project, "there from the start");
  await send(server, [shownFirst]);
  await eventually("the first event stored", () => stored(project, "there from the start"));
  await open(p, project);
  await shows(p, "there from the start");
  await shows(p, "Log streaming is off");
  await label(p, "Show changes as they happen").uncheck();
  // Counted from the uncheck: the installed clock also moves in real time, so a look may have
  // begun before it.
  const looks = [];
  p.on("request", (r) => r.method() === "GET" && r.url().includes(`/projects/${project}/audit-logs`) && looks.push(r.url()));
  // Late, and dated a minute before the event shown: it comes in below the newest row.
  const earlier = new Date(Date.parse(shownFirst.timestamp) - 60_000).toISOString().replace(/\.\d+Z$/, "Z");
  await send(server, [auditEvent(ORG, project, "arrived later", { timestamp: earlier })]);
  await eventually("the later event stored", () => stored(project, "arrived later"));
  await p.clock.runFor(60_000);
  assert.deepEqual(looks, [], "neither the events nor the streaming panel looked again");
  assert.equal(await p.getByText("arrived later").count(), 0);
  // Asked again, the page shows what came meanwhile at its next look.
  await label(p, "Show changes as they happen").check();
  await p.clock.runFor(10_000);
  await shows(p, "arrived later");
  // Stopped, the page stays so when it is drawn again (another page and back).
  await label(p, "Show changes as they happen").uncheck();
  await p.getByRole("link", { name: "Delivery problems" }).click();
  await p.getByRole("heading", { name: "Delivery problems" }).waitFor();
  await p.getByRole("link", { name: "Audit Logs" }).click();
  await shows(p, "arrived later");
  assert.equal(await label(p, "Show changes as they happen").isChecked(), false);
  noProblems(p);
  await p.context().close();
});

test("a refused key shows Datadog's refusal, and nothing is saved", async () => {
  const p = await page(chrome);
  const project = unique("refused");
  await open(p, project, "streaming");
  await p.getByRole("radio", { name: "Datadog" }).check();
  // Tested before it is named: a test needs no name, a save does.
  await label(p, "API Key").fill(REFUSED_KEY);
  await button(p, "Test connection").click();
  await shows(p, "Failure: connection not established");
  assert.ok(await focused(button(p, "Test connection")), "the focus stays on Test connection");
  const alert = await p.getByRole("alert").innerText();
  assert.match(alert, /key/i, alert);
  // Another key is not the one tested: the result goes.
  await label(p, "API Key").fill(REFUSED_KEY.replace(/.$/, "0"));
  assert.equal(await p.getByText("Failure: connection not established").count(), 0);
  await button(p, "Save").click();
  await shows(p, "Enter a name for this destination.");
  await screenshot(p, "test-connection-refused");
  await open(p, project);
  await shows(p, "Log streaming is off");
  noProblems(p);
  await p.context().close();
});

test("Edit streaming configuration switches the provider from CloudWatch to Datadog", async () => {
  const p = await page(chrome);
  const project = unique("switch");
  await open(p, project, "streaming");
  await p.getByRole("radio", { name: "Amazon CloudWatch" }).check();
  await label(p, "Destination name").fill("first");
  await label(p, "Role ARN").fill(ROLE_ARN);
  await save(p);

  // The heading the focus lands on says what was picked before the configuration is read.
  await button(p, "Manage").waitFor();
  let answer, answered;
  const held = new Promise((resolve) => (answer = resolve));
  const passed = new Promise((resolve) => (answered = resolve));
  await p.route("**/streaming", async (route) => {
    if (route.request().method() === "GET") await held;
    await route.continue();
    answered();
  });
  await manage(p, "Edit streaming configuration");
  const editing = p.getByRole("heading", { name: "Edit streaming configuration" });
  await editing.waitFor();
  assert.ok(await focused(editing), "the focus is on the heading");
  assert.equal(await label(p, "Role ARN").count(), 0, "read before the configuration came");
  answer();
  await passed;
  await p.unroute("**/streaming");
  assert.equal(await label(p, "Role ARN").inputValue(), ROLE_ARN, "the form is filled in");
  assert.equal(await label(p, "Destination name").inputValue(), "first");
  await p.getByRole("radio", { name: "Datadog" }).check();
  await label(p, "Destination name").fill("second");
  // Switching provider needs a key: the form says so, at the field, rather than saving half a
  // destination.
  await button(p, "Save").click();
  await shows(p, "Enter the key from your organization");
  assert.ok(await label(p, "API Key").evaluate((input) => input === document.activeElement), "the key's field has the focus");
  await label(p, "API Key").fill("fedcba9876543210fedcba9876543210");
  // Someone saves another configuration meanwhile: nothing is stored, what was typed stays, the
  // page says what is saved now, and saving again replaces that one knowingly.
  const api = `${new URL(server.console).origin}/v1/organizations/${ORG}/projects/${project}/audit-logs/streaming`;
  const asOrganization = { "x-organization-id": ORG, "content-type": "application/json" };
  const { version } = await (await fetch(api, { headers: asOrganization })).json();
  const elsewhere = await fetch(api, {
    method: "PUT",
    headers: { ...asOrganization, "if-match": String(version) },
    body: JSON.stringify({ provider: "datadog", name: "saved elsewhere", datadog: { site: "datadoghq.com", api_key: "0123456789abcdef0123456789ab4321" } }),
  });
  assert.equal(elsewhere.status, 200, await elsewhere.text());
  await button(p, "Save").click();
  await shows(p, "someone changed the streaming configuration meanwhile (it is now “saved elsewhere”, Datadog, its API key ending in 4321)");
  assert.equal(await label(p, "Destination name").inputValue(), "second");
  assert.equal(await label(p, "API Key").inputValue(), "fedcba9876543210fedcba9876543210");
  // The key's hint is of the destination saved now.
  assert.equal(await described(label(p, "API Key")), "The key on file ends in 4321; leave this empty to keep it.");
  // Pressed twice, saved once.
  const puts = [];
  p.on("request", (r) => r.method() === "PUT" && r.url().endsWith("/streaming") && puts.push(r.url()));
  await button(p, "Save").dblclick();
  await shows(p, "Streaming configuration saved.");
  assert.equal(puts.length, 1, "one save sent");
  const panel = await streamingPanel(p);
  assert.match(panel, /Datadog[\s\S]*second/);
  assert.ok(!panel.includes("Amazon CloudWatch"), panel);

  const description = `after the switch, ${project}`;
  await send(server, [auditEvent(ORG, project, description)]);
  await eventually("the event at the Datadog stand-in", async () =>
    (await datadogEntries(server)).some((e) => e.description === description));

  // A Pause the service refuses says why, and the focus goes back to the Manage button rather
  // than stay on the menu item that is hidden now.
  await p.route("**/streaming/pause", (route) =>
    route.fulfill({
      status: 503,
      contentType: "application/json",
      body: JSON.stringify({ error: { code: "unavailable", message: "Pausing is not possible right now." } }),
    }),
  );
  await manage(p, "Pause");
  await shows(p, "Pausing is not possible right now.");
  assert.ok(await button(p, "Manage").evaluate((b) => b === document.activeElement), "the focus is on Manage");
  await p.unroute("**/streaming/pause");

  // Delete, from the Manage menu, after a confirmation, asked once however often it is picked.
  await manage(p, "Delete");
  await manage(p, "Delete");
  assert.equal(await button(p, "Delete streaming configuration").count(), 1, "one question");
  assert.ok(await button(p, "Keep it").evaluate((b) => b === document.activeElement), "the focus is on Keep it");
  // Changed elsewhere meanwhile (the API answers 412 to the version this page saw): the page
  // shows the configuration as it is now instead of asking again with the old version.
  await p.route("**/streaming", (route) =>
    route.request().method() === "DELETE"
      ? route.fulfill({
          status: 412,
          contentType: "application/json",
          body: JSON.stringify({ error: { code: "precondition_failed", message: "version 9 is not the current one" } }),
        })
      : route.continue(),
  );
  await button(p, "Delete streaming configuration").click();
  await shows(p, "changed since this page showed it");
  assert.match(await p.locator("#news").getAttribute("class"), /\bbad\b/, "said as news that nothing was done");
  assert.equal(await button(p, "Delete streaming configuration").count(), 0, "the question is gone");
  await p.unroute("**/streaming");
  await streamingPanel(p);
  // Pressed twice, sent once.
  const deletes = [];
  p.on("request", (r) => r.method() === "DELETE" && deletes.push(r.url()));
  await manage(p, "Delete");
  await button(p, "Delete streaming configuration").dblclick();
  await shows(p, "Streaming configuration deleted.");
  await shows(p, "Log streaming is off");
  assert.equal(deletes.length, 1, "one delete sent");

  // Enabled again at once, while the deleted credentials are still going (the API answers 429
  // and when to come back): the page waits as asked and saves, without a second press.
  let refused = 0;
  await p.route("**/streaming", (route) =>
    route.request().method() === "PUT" && refused++ === 0
      ? route.fulfill({
          status: 429,
          headers: { "retry-after": "1" },
          contentType: "application/json",
          body: JSON.stringify({ error: { code: "credentials_being_deleted", message: "still being deleted" } }),
        })
      : route.continue(),
  );
  await button(p, "Enable Log Streaming").click();
  await p.getByRole("radio", { name: "Datadog" }).check();
  await label(p, "Destination name").fill("third");
  await label(p, "API Key").fill("fedcba9876543210fedcba9876543210");
  await button(p, "Save").click();
  await shows(p, "still being removed: saving again in 1 s");
  await shows(p, "Streaming configuration saved.");
  assert.equal(refused, 2, "saved by the second PUT");
  await p.unroute("**/streaming");
  assert.match(await streamingPanel(p), /Datadog[\s\S]*third/);
  noProblems(p);
  await p.context().close();
});

test("hostile events show as text and run nothing", async () => {
  const p = await page(chrome);
  const project = unique("hostile");
  const bucket = "<img src=x onerror=alert(1)>";
  const description = "<script>window.__pwned = 1</script> created a bucket";
  await send(server, [
    auditEvent(ORG, project, description, { bucket: { id: "b-1", name: bucket } }),
    auditEvent(ORG, project, `"><svg onload=alert(2)> updated`, { action: "update" }),
    auditEvent(ORG, project, "assigned a version to a channel", {
      action: "update",
      bucket: { id: "b-2", name: "assigned-bucket" },
      version: { id: "v-2", name: "v2" },
      channel: { id: "c-2", name: "assigned-channel" },
    }),
  ]);
  await open(p, project);
  await eventually("the hostile events listed", async () => {
    await p.reload();
    await shows(p, "Log streaming", 10);
    await p.getByRole("table").waitFor({ timeout: 5000 });
    const listed = await p.getByRole("table").innerText();
    return [bucket, "onload=alert(2)", "assigned a version to a channel"].every((t) => listed.includes(t));
  });
  await shows(p, description);
  await shows(p, `"><svg onload=alert(2)> updated`);
  // The resource an assignment is about is its channel, as the search and the CSV name it.
  const assigned = await p.getByRole("row").filter({ hasText: "assigned a version to a channel" }).innerText();
  assert.match(assigned, /channel assigned-channel/);
  await p.getByRole("row").filter({ hasText: bucket }).getByRole("button", { name: "Show JSON" }).click();
  await shows(p, '"name": "<img src=x onerror=alert(1)>"');
  assert.equal(await p.locator("main img, main script, main svg[onload]").count(), 0);
  assert.equal(await p.evaluate(() => window.__pwned), undefined);
  await screenshot(p, "hostile-events");
  noProblems(p);
  await p.context().close();
});

/** Presses Tab until `control` has the focus, as a person would. */
async function tabTo(control) {
  for (let presses = 0; presses < 60; presses++) {
    await control.page().keyboard.press("Tab");
    if (await control.evaluate((el) => el === document.activeElement)) return;
  }
  throw new Error(`Tab never reached ${control}`);
}


test("answers that come after the person moved on change nothing on screen", async () => {
  const p = await page(chrome);
  const project = unique("late");
  /** Holds the browser's `method` requests to paths ending in `suffix` until `release()`. */
  const hold = async (suffix, method) => {
    let release;
    const held = new Promise((resolve) => (release = resolve));
    const matches = (url) => url.pathname.endsWith(suffix);
    await p.route(matches, async (route) => {
      if (route.request().method() === method) await held;
      await route.fallback();
    });
    return async () => {
      release();
      await p.unroute(matches);
    };
  };
  const frame = () => p.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));

  // A key changed while its test is on the way: the answer is about the key before.
  await open(p, project, "streaming");
  await p.getByRole("radio", { name: "Datadog" }).check();
  await label(p, "Destination name").fill("late");
  await label(p, "API Key").fill("0123456789abcdef0123456789abcdef");
  const tested = await hold("/streaming/test", "POST");
  await button(p, "Test connection").click();
  await shows(p, "Sending a test event…");
  await label(p, "API Key").fill("ffffffffffffffffffffffffffff9999");
  const answered = p.waitForResponse((r) => r.url().endsWith("/streaming/test"));
  await tested();
  await answered;
  await shows(p, "The settings changed while they were tested: test them again.");
  assert.equal(await p.getByText("Success: connection established").count(), 0);
  await button(p, "Test connection").click();
  await shows(p, "Success: connection established");
  await save(p);

  // Events owed for a while are said with when the oldest came.
  const delivering = (url) => url.pathname.endsWith("/streaming");
  await p.route(delivering, async (route) => {
    if (route.request().method() !== "GET") return route.fallback();
    const response = await route.fetch();
    const view = await response.json();
    view.health = { ...view.health, status: "failing", state: "delivering", pending: 3, oldest_pending_at: "2026-12-01T09:00:00Z" };
    await route.fulfill({ response, json: view });
  });
  await p.reload();
  const panel = await streamingPanel(p);
  assert.match(panel, /Oldest pending event\s+2026-12-01 09:00:00 UTC/, panel);
  await p.unroute(delivering);

  // Left before its configuration came, the edit page does not name the page shown after it.
  await p.reload();
  await streamingPanel(p);
  const viewed = await hold("/streaming", "GET");
  const asked = p.waitForRequest((r) => r.url().endsWith("/streaming") && r.method() === "GET");
  await manage(p, "Edit streaming configuration");
  await p.waitForURL(/view=streaming/);
  const edit = await asked;
  await p.goBack();
  await p.getByRole("heading", { name: "Audit Logs" }).waitFor();
  const title = await p.title();
  await viewed();
  await edit.response();
  await streamingPanel(p);
  await frame();
  assert.equal(await p.title(), title);
  assert.ok(!title.includes("streaming configuration"), title);

  // A refused search keeps its alert while looks for newer events redraw the table it explains.
  await send(server, [auditEvent(ORG, project, "before the refusal")]);
  await eventually("the event listed", async () => {
    await button(p, "Search").click();
    await shows(p, "on this page.");
    return (await p.locator("main").innerText()).includes("before the refusal");
  });
  const filtered = (url) => url.pathname.endsWith(`/projects/${project}/audit-logs`) && url.searchParams.get("status") === "FAILED";
  await p.route(filtered, (route) =>
    route.fulfill({ status: 429, contentType: "application/json", body: JSON.stringify({ error: { code: "rate_limited", message: "Too many searches: try again in a minute." } }) }),
  );
  await label(p, "Status").selectOption("FAILED");
  await button(p, "Search").click();
  await shows(p, "Too many searches: try again in a minute.");
  await send(server, [auditEvent(ORG, project, "after the refusal")]);
  await p.waitForResponse(async (r) => r.url().includes(`/projects/${project}/audit-logs`) && !r.url().includes("status=") && (await r.text()).includes("after the refusal"), { timeout: 90_000 });
  await frame();
  assert.equal(await p.getByRole("alert").innerText(), "Too many searches: try again in a minute.");

  // The skip link moves to the page's content and keeps what was typed on it.
  await open(p, project, "streaming");
  await label(p, "Destination name").fill("renamed late");
  await p.getByRole("link", { name: "Skip to content" }).focus();
  await p.keyboard.press("Enter");
  await p.waitForURL(/#main$/);
  await frame();
  assert.equal(await label(p, "Destination name").inputValue(), "renamed late");

  // A save, or a Pause, answered after the person left for another page leaves that page as it
  // is: no news of it, and no move back.
  const answeredAfterLeaving = async (suffix, method, press) => {
    const released = await hold(suffix, method);
    const answered = p.waitForResponse((r) => r.url().endsWith(suffix) && r.request().method() === method);
    await press();
    await p.getByRole("link", { name: "Delivery problems" }).click();
    await p.getByRole("heading", { name: "Delivery problems" }).waitFor();
    await released();
    await answered;
    await frame();
    assert.equal(new URL(p.url()).searchParams.get("view"), "problems");
    assert.equal(await p.locator("#news").innerText(), "");
    assert.equal(await p.getByRole("heading", { name: "Delivery problems" }).count(), 1);
  };
  await answeredAfterLeaving("/streaming", "PUT", () => button(p, "Save").click());
  await p.getByRole("link", { name: "Audit Logs" }).click();
  await streamingPanel(p);
  await answeredAfterLeaving("/streaming/pause", "POST", () => manage(p, "Pause"));
  noProblems(p);
  await p.context().close();
});

test("keyboard only: enable Datadog streaming, test, save and pause without a pointer", async () => {
  const p = await page(chrome);
  const project = unique("keyboard");
  await open(p, project);
  await shows(p, "Log streaming is off");
  await tabTo(p.getByRole("button", { name: "Enable Log Streaming", exact: true }));
  await p.keyboard.press("Enter");
  await p.getByRole("heading", { name: "Enable Log Streaming" }).waitFor();
  await tabTo(p.getByRole("radio", { name: "Amazon CloudWatch", exact: true }));
  await p.keyboard.press("ArrowDown");
  assert.ok(await p.getByRole("radio", { name: "Datadog" }).isChecked(), "arrows choose Datadog");
  await tabTo(label(p, "Destination name"));
  await p.keyboard.type("keyboard");
  await tabTo(label(p, "API Key"));
  await p.keyboard.type("00112233445566778899aabbccddeeff");
  await tabTo(label(p, "Datadog site"));
  await p.keyboard.press("ArrowDown");
  assert.equal(await label(p, "Datadog site").inputValue(), "us3.datadoghq.com");
  await tabTo(p.getByRole("button", { name: "Test connection", exact: true }));
  await p.keyboard.press("Enter");
  await shows(p, "Success: connection established");
  await tabTo(p.getByRole("button", { name: "Save", exact: true }));
  await p.keyboard.press("Enter");
  await shows(p, "Streaming configuration saved.");
  await shows(p, "us3.datadoghq.com");

  // The Manage menu: Enter opens it, arrows move, Enter picks.
  await tabTo(p.getByRole("button", { name: "Manage", exact: true }));
  await p.keyboard.press("Enter");
  await p.getByRole("menuitem", { name: "Edit streaming configuration" }).waitFor();
  await p.keyboard.press("ArrowDown");
  await p.keyboard.press("Enter");
  await shows(p, "Streaming paused");
  await shows(p, "(paused)");
  await tabTo(p.getByRole("button", { name: "Manage", exact: true }));
  await p.keyboard.press("ArrowDown");
  await p.keyboard.press("ArrowDown");
  await p.keyboard.press("Enter");
  await shows(p, "Streaming resumed");
  noProblems(p);
  await p.context().close();
});

test("what to fix is said at its box, news is read out, and paging keeps the focus", async () => {
  const p = await page(chrome);
  const project = unique("place");
  // Two pages of 25.
  await send(server, Array.from({ length: 26 }, (_, i) => auditEvent(ORG, project, `paged ${i}`)));
  await open(p, project, "streaming");
  // The news region is on the page before any news: one added with its text is not read out.
  const news = p.locator("#news");
  await p.getByRole("radio", { name: "Amazon CloudWatch" }).check();
  assert.equal(await news.getAttribute("role"), "status");
  assert.equal(await news.innerText(), "");

  // A save without a name: the name's box says so, is marked and has the focus.
  const name = label(p, "Destination name");
  const roleArn = label(p, "Role ARN");
  await roleArn.fill("arn:aws:iam::12345:role/short-account");
  await button(p, "Save").click();
  await shows(p, "Enter a name for this destination.");
  assert.equal(await name.getAttribute("aria-invalid"), "true");
  assert.ok(await focused(name), "the name's box has the focus");
  assert.equal(await described(name), "Enter a name for this destination.");
  await name.fill("place");
  assert.equal(await name.getAttribute("aria-invalid"), null, "typing takes the mark back");
  assert.equal(await described(name), "");
  // The API refuses the ARN (`cloudwatch.role_arn`): said at the Role ARN box, in the page's words.
  await button(p, "Save").click();
  await p.locator('[aria-invalid="true"]').waitFor();
  assert.equal(await roleArn.getAttribute("aria-invalid"), "true");
  assert.ok(await focused(roleArn), "the Role ARN box has the focus");
  const said = await described(roleArn);
  assert.match(said, /^Role ARN \S/, said);
  assert.ok(!said.includes("`") && !said.includes("cloudwatch.role_arn"), said);
  assert.equal(await p.getByRole("alert").innerText(), `Nothing was stored: ${said}`);
  await screenshot(p, "field-error");
  await roleArn.fill(ROLE_ARN);
  assert.equal(await roleArn.getAttribute("aria-invalid"), null);
  // A save the service turns away keeps the focus on Save, busy while it waits but never
  // disabled (which would drop the focus).
  await p.route("**/streaming", (route) =>
    route.request().method() === "PUT"
      ? route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ error: { code: "internal", message: "Saving is out for now." } }) })
      : route.fallback(),
  );
  await button(p, "Save").focus();
  await p.keyboard.press("Enter");
  await shows(p, "Nothing was stored: Saving is out for now.");
  assert.ok(await focused(button(p, "Save")), "the focus stays on Save");
  assert.equal(await button(p, "Save").getAttribute("aria-disabled"), null, "and it can be pressed again");
  await p.unroute("**/streaming");
  await save(p);
  assert.equal(await news.innerText(), "Streaming configuration saved.");
  assert.match(await news.getAttribute("class"), /\bgood\b/);
  // Read with the heading the focus moves to, as a live region may be cut short by the move.
  const heading = p.getByRole("heading", { name: "Audit Logs" });
  assert.ok(await focused(heading));
  assert.equal(await described(heading), "Streaming configuration saved.");

  // Paging: the last page has no Older, the first no Newer; the focus goes to the other.
  await eventually("26 events stored", async () => {
    await label(p, "Per page").selectOption("25");
    await button(p, "Search").click();
    await shows(p, "25 events on this page.");
    return (await button(p, "Older events").count()) === 1;
  });
  await button(p, "Older events").focus();
  await p.keyboard.press("Enter");
  // The 26 events and the configuration's own.
  await shows(p, /^[12] events? on this page\.$/);
  assert.equal(await button(p, "Older events").count(), 0);
  assert.ok(await focused(button(p, "Newer events")), "the focus is on Newer events");
  await p.keyboard.press("Enter");
  await shows(p, "25 events on this page.");
  assert.equal(await button(p, "Newer events").count(), 0);
  assert.ok(await focused(button(p, "Older events")), "the focus is on Older events");

  // A search the API refuses for a box (`since` after `until`) is said at that box.
  await label(p, "Since").fill("2026-06-02T00:00");
  await label(p, "Until").fill("2026-06-01T00:00");
  await button(p, "Search").click();
  await shows(p, "Since must not be after Until");
  assert.equal(await label(p, "Since").getAttribute("aria-invalid"), "true");
  assert.ok(await focused(label(p, "Since")));
  assert.equal(await p.getByRole("table").getByRole("row").count(), 26, "the table keeps what it showed");
  // Each Show JSON is told from the others by its row's time and description.
  assert.match(await described(button(p, "Show JSON").first()), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \S/);
  // Sent again, the form is judged anew: a fix made in the other box takes the mark back.
  await label(p, "Until").fill("2026-06-03T00:00");
  await button(p, "Search").click();
  await shows(p, "No events match on this page.");
  assert.equal(await label(p, "Since").getAttribute("aria-invalid"), null);
  await label(p, "Until").fill("2026-06-01T00:00");
  await button(p, "Search").click();
  await shows(p, "Since must not be after Until");
  // Clear empties the boxes, and so takes back what was said about them.
  await button(p, "Clear").click();
  assert.equal(await label(p, "Since").getAttribute("aria-invalid"), null);
  assert.equal(await described(label(p, "Since")), await p.getByText(/^In your local time/).first().innerText());
  await shows(p, /^2[67] events on this page\.$/);

  // The looks for newer events that get no answer say so; the next that gets one takes it back.
  const listing = (url) => url.pathname.endsWith(`/projects/${project}/audit-logs`);
  await p.route(listing, (route) =>
    route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ error: { code: "internal", message: "The listing is out for now." } }) }),
  );
  await shows(p, "newer events are not shown until a look gets one");
  assert.match(await p.getByText("Could not look again since").innerText(), /The listing is out for now\./);
  await p.unroute(listing);
  await p.getByText("newer events are not shown").waitFor({ state: "detached", timeout: 30_000 });

  // Delivery problems: news shown once is gone; the last More failures moves the focus to the
  // first failure it brought, and a replay refused for its Until box says so there.
  await p.getByRole("link", { name: "Delivery problems" }).click();
  await p.getByRole("heading", { name: "Delivery problems" }).waitFor();
  assert.equal(await news.innerText(), "");
  const failed = (i) => ({ event_id: `e-${i}`, failed_at: "2026-12-01T10:00:00Z", reason: "refused", event: auditEvent(ORG, project, `failed ${i}`) });
  await p.route("**/streaming/failures*", (route) =>
    route.fulfill({
      json: new URL(route.request().url()).searchParams.get("cursor")
        ? { failures: [failed(2)], next_cursor: null }
        : { failures: [failed(1)], next_cursor: "next" },
    }),
  );
  await p.reload();
  await shows(p, "1 failed event listed.");
  await button(p, "More failures").focus();
  await p.keyboard.press("Enter");
  await shows(p, "2 failed events listed.");
  assert.equal(await button(p, "More failures").count(), 0);
  assert.ok(await focused(p.getByRole("row", { name: /failed 2/ })), "the focus is on the failure More brought");
  await p.unroute("**/streaming/failures*");
  await label(p, "Until").fill(await label(p, "Since").inputValue());
  await button(p, "Replay").click();
  await shows(p, "Until must be after Since");
  assert.equal(await label(p, "Until").getAttribute("aria-invalid"), "true");
  assert.ok(await focused(label(p, "Until")));
  noProblems(p);
  await p.context().close();
});

test("Delivery problems: connection tests, a replay with its progress, and failures", async () => {
  const p = await page(chrome);
  const project = unique("problems");
  await open(p, project, "streaming");
  await p.getByRole("radio", { name: "Datadog" }).check();
  await label(p, "Destination name").fill("problems");
  await label(p, "API Key").fill(REFUSED_KEY);
  await button(p, "Test connection").click();
  await shows(p, "Failure: connection not established");
  await label(p, "API Key").fill("abcdefabcdefabcdefabcdefabcdef12");
  await button(p, "Test connection").click();
  await shows(p, "Success: connection established");
  await save(p);
  const description = `to replay, ${project}`;
  await send(server, [auditEvent(ORG, project, description)]);
  await reloadUntil(p, "2 delivered, 0 failed");

  await p.getByRole("link", { name: "Delivery problems" }).click();
  await p.getByRole("heading", { name: "Delivery problems" }).waitFor();
  await shows(p, "No failed events");
  const tests = p.getByRole("region", { name: "Last connection tests" });
  await tests.getByRole("table").waitFor();
  const rows = await tests.getByRole("row").allInnerTexts();
  assert.equal(rows.length, 3, rows.join("\n"));
  assert.match(rows[1], /succeeded/);
  assert.match(rows[2], /failed/);

  // Failed events appear only after the retry window (a week by default), too long to wait
  // for here: the failures the API would list are handed to the page, hostile text included.
  await p.route("**/streaming/failures*", (route) =>
    route.fulfill({
      status: 200,
      contentType: "application/json",
      body: JSON.stringify({
        failures: [{
          event_id: "e-1",
          failed_at: "2026-12-01T10:00:00Z",
          reason: "not delivered within the 168 h retry window: <b onmouseover=alert(4)>refused</b>",
          event: auditEvent(ORG, project, "<iframe src=javascript:alert(5)> deleted a channel"),
        }],
        next_cursor: null,
      }),
    }));
  await p.reload();
  await shows(p, "1 failed event listed.");
  await shows(p, "<iframe src=javascript:alert(5)> deleted a channel");
  await shows(p, "retry window: <b onmouseover=alert(4)>refused</b>");
  assert.equal(await p.locator("main iframe, main b").count(), 0);
  await p.unroute("**/streaming/failures*");

  // A replay's range is of the events' own times, and an event fails only after the retry
  // window: for failed events Since goes back as far as a replay takes, for all of them a day.
  const daysBack = async () => Math.round((Date.now() - new Date(await label(p, "Since").inputValue())) / 86_400_000);
  assert.equal(await daysBack(), 365);
  await p.getByLabel("Only failed events").uncheck();
  assert.equal(await daysBack(), 1);
  // Its first look shows it as the API shows a replay waiting behind others (the service's
  // side of it: tests/replay.rs); the next ones as they are.
  const waiting = "no progress for 15 minutes: the replay is waiting behind others";
  let looks = 0;
  await p.route("**/streaming/replays/*", async (route) => {
    const response = await route.fetch();
    const replay = await response.json();
    looks += 1;
    await route.fulfill({ response, json: looks === 1 ? { ...replay, state: "running", last_error: waiting } : replay });
  });
  await button(p, "Replay").click();
  await shows(p, `so far… ${waiting}`);
  // The event and the configuration's own audit event, again.
  await shows(p, "Replay completed: 2 delivered, 0 failed.", 90);
  await p.unroute("**/streaming/replays/*");
  await screenshot(p, "delivery-problems");
  // The finished replay's page lists the failures as they are now: none, not the one shown before.
  await shows(p, "No failed events");
  assert.equal(await p.getByText("1 failed event listed.").count(), 0);

  await eventually("the replayed event at the Datadog stand-in twice", async () =>
    (await datadogEntries(server)).filter((e) => e.description === description).length === 2);
  noProblems(p);
  await p.context().close();
});

/** A new project (named after `name`) with a FAILED event described `failed` and an OK one,
 * its Audit Logs page open once both are listed; the project. */
async function failedAndOk(p, name, failed) {
  const project = unique(name);
  await send(server, [
    auditEvent(ORG, project, failed, { status: "FAILED" }),
    auditEvent(ORG, project, "left out", { status: "OK" }),
  ]);
  await open(p, project);
  await eventually("both events listed", async () => {
    await p.reload();
    await p.getByRole("table").waitFor({ timeout: 10_000 });
    return (await p.getByRole("table").getByRole("row").count()) === 3;
  });
  return project;
}

test("Export downloads the events the filters select", async () => {
  const p = await page(chrome);
  await failedAndOk(p, "export", "exported one");
  await label(p, "Status").selectOption("FAILED");
  await button(p, "Search").click();
  await eventually("the filtered listing", async () => (await p.getByRole("table").getByRole("row").count()) === 2);
  // A search the API turns away leaves the table with its own: Export exports what is shown.
  const okSearches = (url) => url.searchParams.get("status") === "OK";
  await p.route(okSearches, (route) =>
    route.fulfill({
      status: 429,
      headers: { "retry-after": "60" },
      contentType: "application/json",
      body: JSON.stringify({ error: { code: "rate_limited", message: "Too many searches; try again in a minute." } }),
    }),
  );
  await label(p, "Status").selectOption("OK");
  await button(p, "Search").click();
  await shows(p, "Too many searches; try again in a minute.");
  await p.unroute(okSearches);
  await label(p, "Export format").selectOption("ndjson");
  // A double click starts one export, and a poll the API turns away for now (503) is tried
  // again: the link still comes.
  const started = [];
  p.on("request", (r) => r.method() === "POST" && r.url().endsWith("/exports") && started.push(r.url()));
  let turnedAway = 0;
  await p.route("**/exports/*", (route) =>
    turnedAway++ === 0
      ? route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ error: { code: "internal", message: "busy" } }) })
      : route.fallback(),
  );
  await button(p, "Export").dblclick();
  const download = p.getByRole("link", { name: "Download export" });
  await download.waitFor({ timeout: 90_000 });
  const url = await download.getAttribute("href");
  const lines = gunzipSync(Buffer.from(await (await fetch(url)).arrayBuffer())).toString().trim().split("\n");
  assert.deepEqual(lines.map((l) => JSON.parse(l).description), ["exported one"]);
  assert.equal(started.length, 1, "one export for a double click");
  assert.ok(turnedAway >= 2, "the poll turned away was tried again");
  assert.equal(await p.getByText("busy").count(), 0, "and not shown as the export's failure");
  noProblems(p);
  await p.context().close();
});

test("a search is kept in the address: a reload or a shared link shows it again", async () => {
  const p = await page(chrome);
  const project = await failedAndOk(p, "address", "kept in the address");
  const address = () => new URL(p.url()).searchParams;
  const entries = await p.evaluate(() => history.length);
  await label(p, "Status").selectOption("FAILED");
  await label(p, "Text").fill("address");
  await label(p, "Since").fill("2020-01-02T03:04");
  await label(p, "Per page").selectOption("25");
  await button(p, "Search").click();
  await eventually("the search answered", async () => (await p.getByRole("table").getByRole("row").count()) === 2);
  assert.equal(address().get("status"), "FAILED");
  assert.equal(address().get("q"), "address");
  assert.equal(address().get("limit"), "25");
  assert.ok(address().get("since"), "the time as the API takes it");
  assert.equal(address().get("project_id"), project);
  assert.equal(await p.evaluate(() => history.length), entries, "the address replaced, not added");
  // Reloaded (as a bookmark or a shared link opens it): the same form, the same answer.
  await p.reload();
  await p.getByRole("table").waitFor();
  assert.equal(await label(p, "Status").inputValue(), "FAILED");
  assert.equal(await label(p, "Text").inputValue(), "address");
  assert.equal(await label(p, "Since").inputValue(), "2020-01-02T03:04");
  assert.equal(await label(p, "Per page").inputValue(), "25");
  assert.equal(await p.getByRole("table").getByRole("row").count(), 2);
  // Cleared, the address holds the project alone again.
  await button(p, "Clear").click();
  await eventually("the cleared search answered", async () => (await p.getByRole("table").getByRole("row").count()) === 3);
  assert.deepEqual([...address().keys()].sort(), ["organization_id", "project_id"]);
  // An address made by hand with a choice the form does not offer leaves that choice out; a
  // time to the second keeps its seconds.
  const until = new Date(Date.now() + 3_600_000);
  until.setSeconds(7, 0);
  const made = `&action=undo&status=FAILED&until=${until.toISOString()}`;
  await p.goto(`${server.console}?organization_id=${ORG}&project_id=${project}${made}`);
  await eventually("the hand-made search answered", async () => (await p.getByRole("table").getByRole("row").count()) === 2);
  assert.equal(await label(p, "Action").inputValue(), "");
  assert.equal(address().get("action"), null);
  assert.equal(address().get("until"), until.toISOString());
  assert.match(await label(p, "Until").inputValue(), /:07$/);
  // Another page of the project has an address of its own, without the search.
  await p.getByRole("link", { name: "Delivery problems" }).click();
  await p.getByRole("heading", { name: "Failed events" }).waitFor();
  assert.equal(address().get("status"), null);
  noProblems(p);
  await p.context().close();
});

test("A completed export says which events it could not hold", async () => {
  const p = await page(chrome);
  const project = unique("export-short");
  await send(server, [auditEvent(ORG, project, "exported anyway")]);
  await open(p, project);
  await eventually("the event listed", async () => {
    await p.reload();
    await p.getByRole("table").waitFor({ timeout: 10_000 });
    return (await p.getByRole("table").getByRole("row").count()) === 2;
  });
  // The export as the API shows it when an item of its range could not be read (the service's
  // side of it: tests/export.rs).
  const lacking = "1 stored events of the range could not be read and are not in the file";
  await p.route("**/exports/*", async (route) => {
    const response = await route.fetch();
    const job = await response.json();
    await route.fulfill({ response, json: job.state === "completed" ? { ...job, error: lacking } : job });
  });
  await button(p, "Export").click();
  await p.getByRole("link", { name: "Download export" }).waitFor({ timeout: 90_000 });
  assert.equal(await p.getByRole("alert").filter({ hasText: lacking }).count(), 1);
  noProblems(p);
  await p.context().close();
});

test("a console whose settings cannot be read says so", async () => {
  const p = await page(chrome);
  await p.route("**/console/config.json", (route) => route.fulfill({ status: 500, body: "" }));
  await open(p, unique("unreadable"));
  const alert = p.getByRole("alert");
  await alert.waitFor({ state: "visible", timeout: 10_000 });
  assert.match(await alert.innerText(), /settings could not be read/);
  assert.equal(await p.getByText("Loading the console").count(), 0);
  await p.context().close();
});

test("/console/ without a project asks for one and lists the organization's projects as text", async () => {
  const p = await page(chrome);
  // The console's files reach the browser gzipped, and it runs them.
  const files = [];
  p.on("response", (r) => r.url().includes("/console/assets/") && files.push(r));
  const org = unique("start-org");
  const hostile = "<img src=x onerror=alert(3)>";
  await send(server, [auditEvent(org, "listed-project", "listed"), auditEvent(org, hostile, "hostile project id")]);
  await eventually("both projects listed", async () => {
    await p.goto(`${server.console}?organization_id=${org}`);
    await p.getByRole("heading", { name: "Projects with events" }).waitFor();
    await shows(p, /\d+ projects?\./, 10);
    return (await p.getByRole("listitem").count()) === 2;
  });
  await shows(p, hostile);
  assert.equal(await p.locator("main img").count(), 0);
  // The organization's events, searched across its projects, each row naming its project.
  const across = p.getByRole("region", { name: "Events of every project" });
  // A costly search, made when asked for.
  await across.getByText("Search the organization's events across its projects").waitFor();
  assert.equal(await across.getByRole("table").count(), 0);
  await label(p, "Text").fill("hostile");
  await button(p, "Search").click();
  await across.getByText("1 event on this page.").waitFor();
  assert.equal(await across.getByRole("link", { name: hostile }).count(), 1);
  assert.equal(new URL(p.url()).searchParams.get("q"), "hostile", "the search is in the address");
  await button(p, "Clear").click();
  await across.getByText("2 events on this page.").waitFor();
  await screenshot(p, "start");
  assert.ok(files.length >= 10, `${files.length} files`);
  for (const file of files) assert.equal(file.headers()["content-encoding"], "gzip", file.url());
  // The last More projects moves the focus to the first project it brought.
  await p.route("**/audit-logs/projects*", (route) => {
    const more = new URL(route.request().url()).searchParams.get("cursor");
    const project = (id) => ({ project_id: id, newest_event_at: "2026-12-01T10:00:00Z", oldest_event_at: "2026-12-01T10:00:00Z" });
    route.fulfill({ json: more ? { projects: [project("brought-by-more")], next_cursor: null } : { projects: [project("first-page")], next_cursor: "next" } });
  });
  await p.reload();
  await button(p, "More projects").focus();
  await p.keyboard.press("Enter");
  await shows(p, "2 projects.");
  assert.equal(await button(p, "More projects").count(), 0);
  assert.ok(await focused(p.getByRole("link", { name: "brought-by-more" })), "the focus is on the project More brought");
  await p.unroute("**/audit-logs/projects*");
  await p.goto(`${server.console}?organization_id=${org}`);
  await shows(p, "2 projects.");
  await p.getByRole("listitem").getByRole("link", { name: hostile }).click();
  await p.getByRole("heading", { name: "Events" }).waitFor();
  await shows(p, "hostile project id");
  assert.equal(new URL(p.url()).searchParams.get("project_id"), hostile);

  await p.goto(`${server.console}?organization_id=${org}`);
  await label(p, "Project ID").fill("typed-project");
  await button(p, "Open").click();
  await p.getByRole("heading", { name: "Events" }).waitFor();
  await shows(p, "Log streaming is off");
  assert.equal(new URL(p.url()).searchParams.get("project_id"), "typed-project");
  noProblems(p);
  await p.context().close();
});

test("/console/ goes past pages of projects that list none, a few by itself and then at More projects", async () => {
  const p = await page(chrome);
  // Seven pages list none (their projects' events have expired), the eighth one project (or
  // none, later).
  const asked = [];
  let last = [{ project_id: "found-later", newest_event_at: "2026-12-01T10:00:00Z", oldest_event_at: "2026-12-01T10:00:00Z" }];
  await p.route("**/audit-logs/projects*", (route) => {
    const cursor = new URL(route.request().url()).searchParams.get("cursor");
    asked.push(cursor);
    const n = cursor ? Number(cursor.replace("page-", "")) : 0;
    route.fulfill({ json: { projects: n === 7 ? last : [], next_cursor: n < 7 ? `page-${n + 1}` : null } });
  });
  await p.goto(`${server.console}?organization_id=${unique("empty-pages")}`);
  await shows(p, "No project with events found so far: “More projects” looks further.");
  assert.deepEqual(asked, [null, "page-1", "page-2", "page-3", "page-4"]);
  await button(p, "More projects").focus();
  await p.keyboard.press("Enter");
  await shows(p, "1 project.");
  assert.deepEqual(asked.slice(5), ["page-5", "page-6", "page-7"]);
  assert.equal(await button(p, "More projects").count(), 0);
  assert.ok(await focused(p.getByRole("link", { name: "found-later" })), "the focus is on the project More brought");
  assert.equal(await p.getByText("No project has stored events yet.").count(), 0);
  // A last More that finds none leaves the focus on what it says.
  last = [];
  await p.reload();
  await shows(p, "No project with events found so far");
  await button(p, "More projects").focus();
  await p.keyboard.press("Enter");
  await shows(p, "No project has stored events yet.");
  assert.ok(await focused(p.getByRole("status").filter({ hasText: "No project has stored events yet." })), "the focus is on the status");
  noProblems(p);
  await p.context().close();
});
