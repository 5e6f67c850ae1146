// Signing in as in AWS: OpenID Connect, authorization code with PKCE, the token in this
// page's memory only; locally, the development header instead.

import { config, auth, getJson } from "./api.js";
import { h, button } from "./dom.js";

export const SIGN_IN_KEY = "audit-log-console.sign-in";
/** Set while the issuer ends its session, whose end comes back to this page. */
const SIGNED_OUT_KEY = "audit-log-console.signed-out";

export function base64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The page's address as registered with the issuer (`ConsoleUrl`), also when it was opened
// as `index.html`.
export const redirectUri = () =>
  `${location.origin}${location.pathname.replace(/index\.html$/, "")}`;

export async function discovery() {
  const issuer = config.sign_in.issuer.replace(/\/+$/, "");
  const found = await getJson(`${issuer}/.well-known/openid-configuration`);
  if (found.issuer && found.issuer.replace(/\/+$/, "") !== issuer) {
    throw new Error("The issuer's discovery document names another issuer.");
  }
  return found;
}

/** Sends the person to the issuer; only the PKCE verifier and state wait in session storage.
 * A sign-in the page starts by itself (`automatic`) takes the place of this page in the
 * history, so Back from the issuer's page does not land on a page that sends there again; it
 * never returns, the page leaving. One a person pressed for returns, its button free again
 * should the browser bring this page back. */
export function signIn({ automatic = false } = {}) {
  if (!automatic) return sendToIssuer(false);
  // Started already (two calls refused at once): this one waits with it, the page leaving.
  leaving ??= sendToIssuer(true).then(
    () => new Promise(() => {}),
    (error) => {
      leaving = null;
      throw error;
    },
  );
  return leaving;
}

/** The sign-in this page started by itself and is leaving for. */
let leaving = null;

async function sendToIssuer(automatic) {
  const provider = await discovery();
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(
    SIGN_IN_KEY,
    JSON.stringify({ state, verifier, back: location.search }),
  );
  const url = new URL(provider.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.sign_in.client_id,
    redirect_uri: redirectUri(),
    scope: "openid",
    state,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  }).toString();
  if (automatic) location.replace(url.toString());
  else location.assign(url.toString());
}

/** Sign-in went wrong in a way another redirect would not mend: say so, offer to try again,
 * from the page that was asked for (`back`, its query) when this page started the sign-in. */
export class SignInStopped extends Error {
  constructor(message, back = "") {
    super(message);
    this.back = back;
  }
}

/** Back from the issuer: trades the code for a token. */
export async function finishSignIn(params) {
  const started = JSON.parse(sessionStorage.getItem(SIGN_IN_KEY) || "null");
  sessionStorage.removeItem(SIGN_IN_KEY);
  // Whatever the address says is shown only when it answers the sign-in this page started.
  if (!started || started.state !== params.get("state")) {
    throw new SignInStopped("This sign-in answer belongs to no sign-in this page started.");
  }
  if (params.get("error")) {
    throw new SignInStopped(
      `The issuer did not sign you in: ${params.get("error_description") || params.get("error")}`,
      started.back,
    );
  }
  try {
    await tradeCode(params.get("code"), started.verifier);
  } catch (error) {
    // The code is spent: whatever went wrong, signing in again starts afresh, and comes back
    // to the page that was asked for.
    const reason = error instanceof TypeError ? "The issuer could not be reached to finish the sign-in." : error.message;
    throw new SignInStopped(reason, started.back);
  }
  history.replaceState(null, "", `${location.pathname}${started.back || ""}`);
}

/** Trades the issuer's code for a token, kept in this page's memory only. */
async function tradeCode(code, verifier) {
  const provider = await discovery();
  const response = await fetch(provider.token_endpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri(),
      client_id: config.sign_in.client_id,
      code_verifier: verifier,
    }),
  });
  if (!response.ok) throw new Error(`The issuer refused the sign-in (${response.status}).`);
  const tokens = await response.json();
  if (!tokens.access_token) throw new Error("The issuer answered no access token.");
  auth.token = tokens.access_token;
  auth.since = Date.now();
  auth.endSession = provider.end_session_endpoint || null;
}

export async function ensureSignedIn() {
  const mode = config.sign_in.mode;
  const who = document.getElementById("who");
  if (mode === "development") {
    who.replaceChildren("Local development: the organization is sent as X-Organization-Id");
    return true;
  }
  if (mode === "off") {
    document.getElementById("main").replaceChildren(
      h("h1", {}, "Audit Logs"),
      h(
        "p",
        { role: "alert", class: "message bad" },
        "Sign-in is not configured. Deploy the stack with the ConsoleClientId parameter (an " +
          "OpenID Connect public client of the JwtIssuer whose redirect URI is this page).",
      ),
    );
    return false;
  }
  const params = new URLSearchParams(location.search);
  // Back from the issuer's sign-out: said so, rather than signed in again at once.
  if (sessionStorage.getItem(SIGNED_OUT_KEY) && !params.has("state")) {
    sessionStorage.removeItem(SIGNED_OUT_KEY);
    signedOut("You are signed out of the console.");
    return false;
  }
  try {
    if (params.has("state")) await finishSignIn(params);
  } catch (error) {
    if (!(error instanceof SignInStopped)) throw error;
    // The project asked for stays in the address, so signing in again comes back to it.
    history.replaceState(null, "", `${location.pathname}${error.back || ""}`);
    signedOut(error.message);
    return false;
  }
  if (!auth.token) {
    await signIn({ automatic: true });
    return false;
  }
  who.replaceChildren(button("Sign out", signOut));
  return true;
}

/** Forgets the token, ends the issuer's session when it has an end-session endpoint. */
function signOut() {
  auth.token = null;
  auth.signedOut = true;
  document.getElementById("who").replaceChildren();
  // Also before the issuer's sign-out: the page a browser may keep for Back is this one, not
  // the person's data.
  signedOut("You are signed out of the console.");
  if (auth.endSession) {
    const url = new URL(auth.endSession);
    url.searchParams.set("client_id", config.sign_in.client_id);
    url.searchParams.set("post_logout_redirect_uri", redirectUri());
    sessionStorage.setItem(SIGNED_OUT_KEY, "1");
    location.assign(url.toString());
  }
}

/** A page with a reason and a Sign in button: no redirect happens by itself. */
export function signedOut(reason) {
  const heading = h("h1", { tabindex: "-1" }, "Audit Logs");
  const why = h("p", { class: "message", id: "signed-out-reason" }, reason);
  heading.setAttribute("aria-describedby", why.id);
  document.getElementById("main").replaceChildren(heading, why, button("Sign in", () => signIn(), { class: "primary" }));
  // News of the page that was in use (a save) is not news of this one.
  document.getElementById("news").replaceChildren();
  // The Sign out button pressed, or the page that was in use, is gone: the focus starts here,
  // read with the reason.
  heading.focus();
}
