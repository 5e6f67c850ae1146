// Signing in as in AWS: the console against an OpenID Connect issuer (a stand-in on
// 127.0.0.1), authorization code with PKCE, the token in the page's memory only.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { browser, page, serve } from "./support.mjs";

const TOKEN = "token-from-the-issuer-7f3a";
let issuer;
/** The token endpoint's origin: another host than the issuer's, as Google's or a Cognito
 * custom domain's are, which the page's policy must let it post the code to. */
let tokens;
let server;
let chrome;
const seen = { authorize: [], token: [], logout: [] };
/** When set, the issuer's authorization endpoint refuses with this error description. */
let refusing = null;
/** When set, the token endpoint answers this status instead of a token. */
let refusingTokens = null;
/** When set, the issuer names an end-session endpoint, which sends the person back. */
let endingSessions = false;

/** The issuer: discovery, an authorization endpoint that signs anyone in, a token endpoint
 * (served on a second origin) that checks the PKCE verifier against the challenge it was
 * shown. */
const codes = new Map();
function startIssuer() {
  const http = createServer(async (request, response) => {
    const url = new URL(request.url, issuer);
    const cors = { "access-control-allow-origin": "*", "content-type": "application/json" };
    if (url.pathname === "/.well-known/openid-configuration") {
      response.writeHead(200, cors).end(JSON.stringify({
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${tokens}/token`,
        ...(endingSessions ? { end_session_endpoint: `${issuer}/logout` } : {}),
      }));
    } else if (url.pathname === "/logout") {
      seen.logout.push(Object.fromEntries(url.searchParams));
      response.writeHead(302, { location: url.searchParams.get("post_logout_redirect_uri") }).end();
    } else if (url.pathname === "/authorize") {
      const q = Object.fromEntries(url.searchParams);
      seen.authorize.push(q);
      codes.set("code-1", q);
      const back = new URL(q.redirect_uri);
      back.search = new URLSearchParams(
        refusing
          ? { error: "access_denied", error_description: refusing, state: q.state }
          : { code: "code-1", state: q.state },
      ).toString();
      response.writeHead(302, { location: back.toString() }).end();
    } else if (url.pathname === "/token" && request.method === "POST") {
      let body = "";
      for await (const chunk of request) body += chunk;
      const form = Object.fromEntries(new URLSearchParams(body));
      seen.token.push({ ...form, host: request.headers.host });
      if (refusingTokens) {
        response.writeHead(refusingTokens, cors).end(JSON.stringify({ error: "server_error" }));
        return;
      }
      const asked = codes.get(form.code);
      const challenge = createHash("sha256").update(form.code_verifier || "").digest("base64url");
      if (!asked || asked.code_challenge !== challenge || form.redirect_uri !== asked.redirect_uri) {
        response.writeHead(400, cors).end(JSON.stringify({ error: "invalid_grant" }));
        return;
      }
      response.writeHead(200, cors).end(JSON.stringify({ access_token: TOKEN, token_type: "Bearer", expires_in: 3600 }));
    } else {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => http.listen(0, "127.0.0.1", () => resolve(http)));
}

/** The API's answers for project `p` of organization `o`, with nothing configured or stored
 * (the local server takes no token: the tests answer instead, and check what was sent). */
function answer(route) {
  const body = new URL(route.request().url()).pathname.endsWith("/streaming")
    ? { organization_id: "o", project_id: "p", aws_account_id: "123456789012", external_id: "e".repeat(32), destination: null,
        health: { status: "unknown", state: "delivering", pending: 0, delivered_24h: 0, failed_24h: 0, hours_24h: [] }, version: 0, updated_at: null }
    : { events: [], failures: [], tests: [], next_cursor: null };
  route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(body) });
}

let http;
let tokenHttp;
before(async () => {
  http = await startIssuer();
  tokenHttp = await startIssuer();
  issuer = `http://127.0.0.1:${http.address().port}`;
  tokens = `http://127.0.0.1:${tokenHttp.address().port}`;
  server = await serve({ CONSOLE_ISSUER: issuer, CONSOLE_CLIENT_ID: "audit-log-console" });
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await server?.stop();
  http?.close();
  tokenHttp?.close();
});

test("the console signs in with the issuer (code with PKCE) and calls the API with its token", async () => {
  const p = await page(chrome);
  const before = { authorize: seen.authorize.length, token: seen.token.length };
  const calls = [];
  // The local server takes no token: the API's answers come from here, and so do its checks.
  await p.route("**/v1/**", (route) => {
    const headers = route.request().headers();
    calls.push({ url: route.request().url(), authorization: headers.authorization, organization: headers["x-organization-id"] });
    answer(route);
  });
  // Opened by its file's name: the issuer is still given the address registered with it.
  await p.goto(`${server.console}index.html?organization_id=o&project_id=p`);
  await p.getByText("Log streaming is off").waitFor();

  assert.equal(seen.authorize.length, before.authorize + 1);
  const asked = seen.authorize.at(-1);
  assert.equal(asked.client_id, "audit-log-console");
  assert.equal(asked.response_type, "code");
  assert.equal(asked.code_challenge_method, "S256");
  assert.equal(asked.redirect_uri, new URL(server.console).toString());
  assert.equal(seen.token.length, before.token + 1, "one code exchanged, with the verifier the issuer checked");
  assert.equal(seen.token.at(-1).host, new URL(tokens).host, "at the token endpoint's own origin");
  assert.ok(calls.length >= 2, JSON.stringify(calls));
  for (const call of calls) {
    assert.equal(call.authorization, `Bearer ${TOKEN}`);
    assert.equal(call.organization, undefined, "no development header in AWS");
  }
  // Back on the page that was asked for, without the code in its address.
  const url = new URL(p.url());
  assert.equal(url.searchParams.get("project_id"), "p");
  assert.equal(url.searchParams.get("code"), null);
  const stored = await p.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  assert.ok(!stored.includes(TOKEN), `the token is kept in memory only: ${stored}`);
  // Signed out (the issuer ends no session): the page says so, and the focus, which was on the
  // button that is gone now, starts at the heading, read with the reason.
  await p.getByRole("button", { name: "Sign out", exact: true }).focus();
  await p.keyboard.press("Enter");
  await p.getByText("You are signed out of the console.").waitFor();
  assert.deepEqual(
    await p.evaluate(() => [document.activeElement.tagName, document.getElementById(document.activeElement.getAttribute("aria-describedby"))?.textContent]),
    ["H1", "You are signed out of the console."],
  );
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test("a forged sign-in answer or a refused token stops with a reason, not a redirect loop", async () => {
  const p = await page(chrome);
  const before = { authorize: seen.authorize.length, token: seen.token.length };
  // An answer this page never asked for, with a message to mislead: neither is acted on.
  await p.goto(`${server.console}?code=stolen&state=forged&error=x&error_description=Call+0800-SCAM`);
  await p.getByText("This sign-in answer belongs to no sign-in this page started.").waitFor();
  assert.equal(await p.getByText("0800-SCAM").count(), 0);
  assert.deepEqual({ authorize: seen.authorize.length, token: seen.token.length }, before);

  // A token the API refuses at once: one sign-in, then the reason, however often it happens.
  await p.route("**/v1/**", (route) =>
    route.fulfill({ status: 401, contentType: "application/json", body: JSON.stringify({ error: { code: "unauthenticated", message: "no" } }) }));
  await p.getByRole("button", { name: "Sign in", exact: true }).waitFor();
  await p.goto(`${server.console}?organization_id=o&project_id=p`);
  await p.getByText("The API refused the token").first().waitFor();
  assert.equal(seen.authorize.length, before.authorize + 1, "one sign-in only");
  assert.equal(seen.token.length, before.token + 1);
  await p.context().close();
});

test("an issuer that refuses the sign-in says why, and signing in again comes back to the project", async () => {
  const p = await page(chrome);
  await p.route("**/v1/**", (route) => {
    answer(route);
  });
  refusing = "Your account is not allowed here";
  await p.goto(`${server.console}?organization_id=o&project_id=p`);
  await p.getByText("The issuer did not sign you in: Your account is not allowed here").waitFor();
  const stopped = new URL(p.url());
  assert.equal(stopped.searchParams.get("project_id"), "p", "the project stays in the address");
  assert.equal(stopped.searchParams.get("error"), null);
  refusing = null;
  // A token endpoint that fails the code's trade says so too, and keeps the project asked for.
  refusingTokens = 503;
  await p.getByRole("button", { name: "Sign in", exact: true }).click();
  await p.getByText("The issuer refused the sign-in (503).").waitFor();
  const refused = new URL(p.url());
  assert.equal(refused.searchParams.get("project_id"), "p", "the project stays in the address");
  assert.equal(refused.searchParams.get("code"), null, "the spent code is gone from the address");
  refusingTokens = null;
  await p.getByRole("button", { name: "Sign in", exact: true }).click();
  await p.getByText("Log streaming is off").waitFor();
  const url = new URL(p.url());
  assert.equal(url.searchParams.get("organization_id"), "o");
  assert.equal(url.searchParams.get("project_id"), "p");
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test("a sign-in that ended before Save says so where the person typed, rather than leaving", async () => {
  const p = await page(chrome);
  // The page's clock moves when told: the sign-in ends without waiting for it.
  await p.clock.install();
  let ended = false;
  await p.route("**/v1/**", (route) => {
    if (ended) return route.fulfill({ status: 401, contentType: "application/json", body: JSON.stringify({ message: "Unauthorized" }) });
    const body = { organization_id: "o", project_id: "p", aws_account_id: "123456789012", external_id: "e".repeat(32), destination: null,
      health: { status: "unknown", state: "delivering", pending: 0, delivered_24h: 0, failed_24h: 0, hours_24h: [] }, version: 0, updated_at: null };
    route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(body) });
  });
  await p.goto(`${server.console}?organization_id=o&project_id=p&view=streaming`);
  await p.getByRole("heading", { name: "Enable Log Streaming" }).waitFor();
  const before = seen.authorize.length;
  await p.getByRole("radio", { name: "Datadog" }).check();
  await p.getByLabel("Destination name", { exact: true }).fill("typed before it ended");
  await p.getByLabel("API Key", { exact: true }).fill("0123456789abcdef0123456789abcdef");
  ended = true;
  await p.clock.fastForward("02:00");
  await p.getByRole("button", { name: "Save", exact: true }).click();
  await p.getByText("Your sign-in has ended, so this was not done.").waitFor();
  assert.equal(seen.authorize.length, before, "not sent to the issuer with what was typed");
  assert.equal(await p.getByLabel("Destination name", { exact: true }).inputValue(), "typed before it ended");
  // Moving on to another page then signs in again by itself (this API refuses the new token
  // too, at once, which the page says rather than loop).
  await p.getByRole("link", { name: "Cancel" }).click();
  await p.getByText("The API refused the token").first().waitFor();
  assert.equal(seen.authorize.length, before + 1, "signed in again on the way");
  assert.deepEqual(p.problems, []);
  await p.context().close();
});

test("signed out stays signed out: Back draws no page, and Back from a sign-in leaves the console", async () => {
  const p = await page(chrome);
  const calls = [];
  await p.route("**/v1/**", (route) => {
    calls.push(route.request().headers().authorization);
    answer(route);
  });
  // A page of the same site before the console, which sends the person to the issuer by itself.
  await p.goto(`${server.console}config.json`);
  await p.goto(`${server.console}?organization_id=o&project_id=p`);
  await p.getByText("Log streaming is off").waitFor();
  const signIns = seen.authorize.length;
  await p.getByRole("link", { name: "Delivery problems" }).click();
  await p.getByRole("heading", { name: "Delivery problems" }).waitFor();
  await p.getByRole("button", { name: "Sign out", exact: true }).click();
  await p.getByText("You are signed out of the console.").waitFor();
  const asked = calls.length;
  await p.goBack();
  await p.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));
  assert.equal(await p.getByText("You are signed out of the console.").count(), 1, "no page drawn behind the sign-out");
  assert.equal(calls.length, asked, "no call without a token");
  assert.equal(seen.authorize.length, signIns, "not signed in again without asking");
  // The issuer's page took the console's place in the history: Back goes to what came before.
  await p.goBack();
  assert.ok(p.url().endsWith("/config.json"), p.url());
  assert.equal(seen.authorize.length, signIns);
  assert.deepEqual(p.problems, []);
  await p.context().close();

  // An issuer that ends its session sends the person back to the console, which says they are
  // signed out rather than sign them in again.
  endingSessions = true;
  try {
    const q = await page(chrome);
    await q.route("**/v1/**", answer);
    await q.goto(`${server.console}?organization_id=o&project_id=p`);
    // Back on the console after the issuer's sign-out: the page that loads says so.
    const returned = q.waitForResponse((r) => r.url().startsWith(server.console) && r.request().isNavigationRequest());
    await q.getByRole("button", { name: "Sign out", exact: true }).click();
    await returned;
    await q.getByText("You are signed out of the console.").waitFor();
    await q.waitForLoadState("load");
    assert.equal(seen.logout.at(-1).post_logout_redirect_uri, new URL(server.console).toString());
    assert.equal(seen.authorize.length, signIns + 1, "one sign-in, none after the sign-out");
    // Once: opened again, the console signs in.
    await q.reload();
    await q.getByRole("button", { name: "Sign out", exact: true }).waitFor();
    assert.equal(seen.authorize.length, signIns + 2);
    assert.deepEqual(q.problems, []);
    await q.context().close();
  } finally {
    endingSessions = false;
  }
});
