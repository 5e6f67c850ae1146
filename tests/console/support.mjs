// What the console's browser tests stand on: `./scripts/local --serve` started as a person
// starts it, headless Chromium, and the emulator and Datadog stand-in read from outside, as a
// customer would see what arrived.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SHOTS = join(ROOT, "target", "console");
/** The key the Datadog stand-in refuses (tests/support/faults.rs, REFUSED_DATADOG_KEY). */
export const REFUSED_KEY = "0".repeat(32);
// The contract's example, in the emulator's account: the local service's AWS ID is another.
export const ROLE_ARN = "arn:aws:iam::123456789012:role/hcp-log-streaming";

/** Resolves to `value` after `ms`, without keeping the process alive for it. */
const after = (ms, value) => new Promise((resolve) => setTimeout(resolve, ms, value).unref());

/** `./scripts/local --serve --port 0` (a free port), until `stop()`; the addresses it prints. */
export async function serve(env = {}) {
  const child = spawn("./scripts/local", ["--serve", "--port", "0", "--events", "20"], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (chunk) => (out += chunk));
  child.stderr.on("data", (chunk) => (out += chunk));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const printed = (label) => {
    const line = out.split("\n").find((l) => l.startsWith(label));
    return line && line.slice(label.length).trim().split(" ")[0];
  };
  const deadline = Date.now() + 20 * 60 * 1000;
  while (!printed("Datadog stand-in:") || !printed("AWS endpoint:")) {
    const code = await Promise.race([exited, after(250, "running")]);
    if (code !== "running" || Date.now() > deadline) {
      throw new Error(`./scripts/local --serve stopped or hung before serving:\n${out}`);
    }
  }
  return {
    console: printed("console:"),
    datadog: printed("Datadog stand-in:"),
    aws: printed("AWS endpoint:"),
    queue: printed("events queue:"),
    output: () => out,
    async stop() {
      // Ctrl-C, as a terminal sends it to the command's process group.
      process.kill(-child.pid, "SIGINT");
      const stopped = await Promise.race([exited, after(60_000, "hung")]);
      if (stopped === "hung") {
        process.kill(-child.pid, "SIGKILL");
        throw new Error("./scripts/local --serve did not stop on Ctrl-C within 60 s");
      }
    },
  };
}

/** Debian's Chromium, headless, with the flags that keep it off this closed network. */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A page that fails the test on any script error or dialog (a hostile event that ran). */
export async function page(chrome) {
  const context = await chrome.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await context.newPage();
  const problems = [];
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  p.on("dialog", (d) => {
    problems.push(`dialog opened: ${d.message()}`);
    d.dismiss();
  });
  // Refusals the API answers (a 400 a test provokes) are the page's to show, not script errors.
  p.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  p.problems = problems;
  return p;
}

export async function screenshot(p, name) {
  mkdirSync(SHOTS, { recursive: true });
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

export const unique = (stem) => `${stem}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;

/** An event as producers send it (the contract's required fields) with `extra` on top. */
export function auditEvent(org, project, description, extra = {}) {
  return {
    status: "OK",
    action: "create",
    description,
    organization_id: org,
    project_id: project,
    timestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    actor: { principal_id: "console-test", type: "TYPE_USER", user: { email: "tester@example.com" } },
    ...extra,
  };
}

// The emulator speaks the AWS protocols and reads the caller's account from the access key in
// the Authorization header; it checks no signature.
function authorization(accessKey, service) {
  const day = new Date().toISOString().slice(0, 10).replace(/-/g, "");
  return `AWS4-HMAC-SHA256 Credential=${accessKey}/${day}/us-east-1/${service}/aws4_request, SignedHeaders=host, Signature=0`;
}

async function awsJson(server, service, target, version, body, accessKey = "test") {
  const response = await fetch(server.aws, {
    method: "POST",
    headers: {
      "x-amz-target": target,
      "content-type": `application/x-amz-json-${version}`,
      authorization: authorization(accessKey, service),
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${target}: ${response.status} ${text}`);
  return JSON.parse(text || "{}");
}

/** Puts events on the events queue, as producers do. */
export async function send(server, events) {
  for (const event of events) {
    await awsJson(server, "sqs", "AmazonSQS.SendMessage", "1.0", {
      QueueUrl: server.queue,
      MessageBody: JSON.stringify(event),
    });
  }
}

/** The messages in the customer's log group, read with the customer's role. */
export async function cloudWatchMessages(server, logGroup = "/hashicorp/packer/audit-logs") {
  const assumed = await fetch(server.aws, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", authorization: authorization("test", "sts") },
    body: new URLSearchParams({ Action: "AssumeRole", Version: "2011-06-15", RoleArn: ROLE_ARN, RoleSessionName: "customer" }),
  }).then((r) => r.text());
  const key = /<AccessKeyId>([^<]+)<\/AccessKeyId>/.exec(assumed)?.[1];
  if (!key) throw new Error(`AssumeRole answered no key: ${assumed}`);
  try {
    const found = await awsJson(server, "logs", "Logs_20140328.FilterLogEvents", "1.1", { logGroupName: logGroup }, key);
    return (found.events || []).map((e) => e.message);
  } catch (error) {
    if (String(error).includes("ResourceNotFoundException")) return [];
    throw error;
  }
}

/** What the Datadog stand-in took, one entry per log. */
export async function datadogEntries(server) {
  return fetch(`${server.datadog}/stand-in/logs`).then((r) => r.json());
}

/** Checks `probe` until it holds, for up to `seconds` (delivery runs in the background). */
export async function eventually(what, probe, seconds = 90) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${seconds} s (last: ${last})`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
