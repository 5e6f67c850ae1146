// The audit-log HTTP API as the console calls it: as the signed-in person, a refusal as an
// error carrying the API's own message.

import { signIn, signedOut } from "./sign-in.js";
import { place } from "./router.js";
import { failure } from "./dom.js";

// Settings that cannot be read are said so by console.js, not left on "Loading the console…".
export const config = await getJson("config.json").catch((error) => ({ unreadable: error }));
/** `signedOut`: the person signed out; nothing is drawn or asked until they sign in again. */
export const auth = { token: null, since: 0, endSession: null, signedOut: false };

export async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    /** Seconds the API asked to wait before trying again (`Retry-After`), if it did. */
    this.retryAfter = retryAfter;
  }
}

/** Calls the API as the signed-in person; a refusal becomes an `ApiError` with its message.
 * A `background` call (nobody asked for it just now) never sends the person to sign in again. */
export async function call(method, path, body, headers = {}, { background = false } = {}) {
  const sent = { accept: "application/json", ...headers };
  if (config.sign_in.mode === "development") sent["x-organization-id"] = place().org;
  else if (auth.token) sent.authorization = `Bearer ${auth.token}`;
  if (body !== undefined) sent["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    // Sent perhaps, but no answer came back: what was asked may have been done or not.
    throw new ApiError(0, "unreachable", "No answer came back from the service (the network, or the service, is down).");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && config.sign_in.mode === "oidc") {
    if (background || auth.signedOut) throw new ApiError(401, "unauthenticated", "Not signed in.");
    auth.token = null;
    // An expired token: sign in again. A token refused as soon as it was issued would be
    // refused again after any number of redirects: say why instead.
    if (Date.now() - auth.since > 60_000) {
      // A change the person pressed for (API Gateway refused it, so nothing was done) is
      // told so, where they typed it, rather than lost in a redirect.
      if (method !== "GET") {
        throw new ApiError(
          401,
          "unauthenticated",
          "Your sign-in has ended, so this was not done. Reload the page to sign in again (copy anything you typed first).",
        );
      }
      await signIn({ automatic: true });
    }
    signedOut(
      "The API refused the token the issuer gave the console (401): its authorizer must accept " +
        "the ConsoleClientId as an audience, and the token must carry the organization claim.",
    );
    throw new ApiError(401, "unauthenticated", "Not signed in.");
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      error.code || "http_error",
      error.message || `The API answered ${response.status}.`,
      Number(response.headers.get("retry-after")) || null,
    );
  }
  return data;
}

/** Polls a running job (an export, a replay) while `region` is on the page: `show` shows its
 * state and says whether the job is finished. A poll that got no answer, or that the API turned
 * away for now (429, 5xx), is tried again later, the job running on meanwhile; another refusal
 * is shown in `region`. */
export async function follow(region, path, show) {
  // Busy while the job runs: screen readers read the region when it ends rather than at every
  // count it shows meanwhile.
  region.setAttribute("aria-busy", "true");
  try {
    let wait = POLL_MS;
    while (document.contains(region)) {
      try {
        if (show(await call("GET", path, undefined, {}, { background: true }))) return;
        wait = POLL_MS;
      } catch (error) {
        if (!(error.status === 0 || error.status === 429 || error.status >= 500)) return failure(region, error);
        wait = Math.min(Math.max(wait * 2, (error.retryAfter || 0) * 1000), 30_000);
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  } finally {
    region.removeAttribute("aria-busy");
  }
}

/** How often a running job is looked at. */
const POLL_MS = 1500;

export const enc = encodeURIComponent;
export const organizationPath = (org) => `/v1/organizations/${enc(org)}/audit-logs`;
export const projectPath = (p) => `/v1/organizations/${enc(p.org)}/projects/${enc(p.project)}/audit-logs`;

export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) q.set(key, value);
  const text = q.toString();
  return text ? `?${text}` : "";
}
