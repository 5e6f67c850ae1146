// Enable Log Streaming and Edit streaming configuration: one form, empty or filled in.

import { config, call, projectPath } from "./api.js";
import { h, newId, field, readable, select, button, say, copy, failure, invalid, refused, validAll, messageRegion, busy } from "./dom.js";
import { go, link, projectHeader, announce } from "./router.js";

export const PROVIDERS = { cloudwatch: "Amazon CloudWatch", datadog: "Datadog" };

export function streamingPage(p) {
  // The heading is focused as the page opens, before the configuration is read: it says what
  // the button pressed said, or nothing it could have to take back (an address opened as is).
  const heading = history.state?.heading || "Streaming configuration";
  const page = h("section", {}, projectHeader(p, heading, "streaming"), h("p", { role: "status" }, "Loading…"));
  call("GET", `${projectPath(p)}/streaming`).then(
    (view) => {
      // Left before the answer (Cancel, Back): the page on screen is another's.
      if (!page.isConnected) return;
      const form = streamingForm(p, view);
      const title = page.querySelector("h1");
      title.textContent = view.destination ? "Edit streaming configuration" : "Enable Log Streaming";
      document.title = `${title.textContent} · Audit log service`;
      page.lastChild.replaceWith(form);
    },
    (error) => failure(page.lastChild, error),
  );
  return page;
}

/** The AWS ID and External ID a customer's role trusts, each to read and copy (news of a copy
 * in `copied`). */
export function trustedIds(view, copied) {
  const id = (label, value) => {
    const box = readable(value || "");
    return h("div", { class: "copyable" }, field(label, box), button(`Copy ${label}`, () => copy(box.value, copied, label)));
  };
  return [id("AWS ID", view.aws_account_id), id("External ID", view.external_id)];
}

/** `${name}` placeholders of infra/'s templates, filled in. */
export function fill(template, values) {
  return template.replace(/\$\{(\w+)\}/g, (whole, name) => (name in values ? values[name] : whole));
}

export function streamingForm(p, view) {
  const saved = view.destination;
  const message = messageRegion();
  const radio = (value, label) => {
    const input = h("input", { type: "radio", name: "provider", value, id: newId("provider"), checked: (saved ? saved.provider : "cloudwatch") === value });
    input.addEventListener("change", switchProvider);
    return h("div", { class: "choice" }, input, h("label", { for: input.id }, label));
  };
  const name = h("input", { name: "name", autocomplete: "off", value: saved ? saved.name : "" });

  // Amazon CloudWatch
  const copied = messageRegion();
  const roleArn = h("input", {
    name: "role_arn",
    autocomplete: "off",
    placeholder: "arn:aws:iam::123456789012:role/hcp-log-streaming",
    value: saved && saved.cloudwatch ? saved.cloudwatch.role_arn : "",
  });
  const region = h(
    "select",
    { name: "region" },
    Object.entries(config.regions).map(([partition, regions]) =>
      h("optgroup", { label: partition }, regions.map((r) => h("option", { value: r }, r))),
    ),
  );
  region.value = saved && saved.cloudwatch ? saved.cloudwatch.region : "us-east-1";
  const values = () => ({
    // Before a role ARN names its partition, the chosen region's (the two must agree).
    partition:
      (/^arn:([a-z-]+):iam::/.exec(roleArn.value.trim()) || [])[1] ||
      Object.keys(config.regions).find((partition) => config.regions[partition].includes(region.value)) ||
      "aws",
    account_id: (/^arn:[a-z-]+:iam::(\d{12}):/.exec(roleArn.value.trim()) || [])[1] || "*",
    log_group_prefix: config.log_group_prefix,
    service_aws_account_id: view.aws_account_id,
    external_id: view.external_id,
  });
  // Whole, nothing to download: the role and its policy, in the account and partition that
  // Terraform applies them in; named so as to paste beside a configuration's own (its
  // `current` data sources, a role for another organization).
  const terraform = () => {
    const filled = (template) =>
      fill(template, {
        ...values(),
        partition: "${data.aws_partition.hcp_log_streaming.partition}",
        account_id: "${data.aws_caller_identity.hcp_log_streaming.account_id}",
      })
        .trim()
        .split("\n")
        .map((line) => `    ${line}`)
        .join("\n");
    return [
      `data "aws_partition" "hcp_log_streaming" {}`,
      `data "aws_caller_identity" "hcp_log_streaming" {}`,
      ``,
      `resource "aws_iam_role" "hcp_log_streaming" {`,
      `  name_prefix          = "hcp-log-streaming-"`,
      `  max_session_duration = 3600`,
      `  assume_role_policy   = <<-EOT`,
      filled(config.role_trust_policy),
      `  EOT`,
      `}`,
      ``,
      `resource "aws_iam_role_policy" "hcp_log_streaming" {`,
      `  name   = "audit-log-streaming"`,
      `  role   = aws_iam_role.hcp_log_streaming.id`,
      `  policy = <<-EOT`,
      filled(config.role_policy),
      `  EOT`,
      `}`,
      ``,
      `output "hcp_log_streaming_role_arn" {`,
      `  value = aws_iam_role.hcp_log_streaming.arn`,
      `}`,
    ].join("\n");
  };
  const snippet = (title, text) => {
    const pre = h("pre", { tabindex: "0", role: "region", "aria-label": title }, text);
    return h("div", { class: "snippet" }, h("div", { class: "snippet-head" }, h("h4", {}, title), button(`Copy ${title}`, () => copy(pre.textContent, copied, title))), pre);
  };
  // On the page only while open: closed, the ids in them would be the page's text twice over.
  const snippets = h("div");
  const setup = h(
    "details",
    { ontoggle: () => drawSnippets() },
    h("summary", {}, "Create the IAM policy and role"),
    h("p", {}, "Attach this policy to a role that trusts the two values above, requiring the second as sts:ExternalId, or apply the Terraform below. Then paste the role's ARN below."),
    snippets,
  );
  const drawSnippets = () =>
    snippets.replaceChildren(
      ...(setup.open
        ? [
            snippet("IAM policy", fill(config.role_policy, values())),
            snippet("Trust policy", fill(config.role_trust_policy, values())),
            snippet("Terraform", terraform()),
          ]
        : []),
    );
  roleArn.addEventListener("input", drawSnippets);
  region.addEventListener("change", drawSnippets);
  const cloudwatch = h(
    "fieldset",
    { class: "provider" },
    h("legend", {}, "Role and region"),
    h("p", {}, "Keep these two values handy: the role you create trusts them."),
    trustedIds(view, copied),
    copied,
    setup,
    field("Role ARN", roleArn),
    field("AWS region", region, "where the log groups are created"),
  );

  // Datadog
  // Of the destination saved now: one saved meanwhile (a 412) may have another key, or none.
  const keyHint = (destination) => {
    const last4 = destination?.datadog?.api_key_last4;
    return last4 ? `The key on file ends in ${last4}; leave this empty to keep it.` : "32 hexadecimal characters, created under Organization Settings.";
  };
  // No saved password in it, nor one saved from it: password managers fill a remembered (perhaps
  // rotated) key into a form that keeps the saved one when left empty. `off` is ignored on
  // password fields; `new-password` is the standard's "not one to fill in", the data attributes
  // the managers' own.
  const apiKey = h("input", {
    type: "password",
    name: "api_key",
    autocomplete: "new-password",
    spellcheck: "false",
    "data-1p-ignore": true,
    "data-lpignore": "true",
    "data-bwignore": true,
  });
  const keyField = field("API Key", apiKey, keyHint(saved));
  const site = select(config.datadog_sites.map((s) => [s, s]), saved && saved.datadog ? saved.datadog.site : config.datadog_sites[0]);
  const datadog = h(
    "fieldset",
    { class: "provider" },
    h("legend", {}, "Key and site"),
    keyField,
    field("Datadog site", site, "the one in the address you sign in at"),
  );

  const provider = () => form.querySelector('input[name="provider"]:checked').value;
  // Only the chosen provider's fields are on the page: the other's would answer to the same
  // names ("Datadog site" to "Datadog") while out of sight.
  function switchProvider() {
    const [chosen, other] = provider() === "cloudwatch" ? [cloudwatch, datadog] : [datadog, cloudwatch];
    other.remove();
    if (chosen.parentNode !== form) message.before(chosen);
  }
  const settings = () => {
    const body = { provider: provider() };
    // Left out when empty: a test needs none, and a save asks for one first.
    if (name.value.trim()) body.name = name.value.trim();
    if (body.provider === "cloudwatch") body.cloudwatch = { role_arn: roleArn.value.trim(), region: region.value };
    else {
      body.datadog = { site: site.value };
      if (apiKey.value.trim()) body.datadog.api_key = apiKey.value.trim();
    }
    return body;
  };
  /** What the form lacks for a test, or for a save (`saving`): the field, and what to do. */
  const missing = (saving) => {
    const s = settings();
    if (saving && !s.name) return [name, "Enter a name for this destination."];
    if (s.cloudwatch && !s.cloudwatch.role_arn) return [roleArn, "Enter the ARN of the role you created."];
    // Only a saved Datadog destination has a key to keep (the one saved now: see a 412).
    if (s.datadog && !s.datadog.api_key && !view.destination?.datadog?.api_key_last4) return [apiKey, "Enter the key from your organization's settings."];
    return null;
  };
  // The controls of the API's field names: a refusal of one is said at it.
  const controls = { name, "cloudwatch.role_arn": roleArn, "cloudwatch.region": region, "datadog.api_key": apiKey, "datadog.site": site };
  // A test's result is of the settings it tested: changed, they are not tested yet.
  let tested = false;
  // Edits so far: one made while a test is on its way leaves its answer about other settings.
  let edits = 0;
  const untested = () => {
    edits += 1;
    if (tested) say(message, "");
    tested = false;
  };
  // Sent again, the form is judged anew: the provider's fields out of the form too.
  const judgeAnew = () => [form, cloudwatch, datadog].forEach(validAll);
  const testButton = button("Test connection", async () => {
    judgeAnew();
    const problem = missing(false);
    if (problem) return say(message, invalid(...problem), "alert");
    say(message, "Sending a test event…");
    const asked = edits;
    try {
      const result = await call("POST", `${projectPath(p)}/streaming/test`, settings());
      if (edits !== asked) return say(message, "The settings changed while they were tested: test them again.");
      const where = result.log_group ? ` (log group ${result.log_group})` : "";
      if (result.success) say(message, `Success: connection established${where}. ${result.message}`, "good");
      else say(message, `Failure: connection not established. ${result.message}`, "alert");
      tested = true;
    } catch (error) {
      say(message, `Connection not tested: ${refused(error, controls)}`, "alert");
    }
  });
  const saveButton = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h(
    "form",
    {
      class: "panel",
      "aria-labelledby": "streaming-form-heading",
      oninput: untested,
      onchange: untested,
      onsubmit: (e) => {
        e.preventDefault();
        // One save at a time: a second press while the first is on its way would save twice.
        busy(saveButton, async () => {
          judgeAnew();
          const problem = missing(true);
          if (problem) return say(message, invalid(...problem), "alert");
          // The version this page read, 0 when nothing was saved: a save someone made meanwhile
          // is a 412 here, not replaced unseen.
          const headers = { "if-match": String(view.version) };
          try {
            // What was pressed for: edits made while it waits are not saved behind the person's back.
            const body = settings();
            await saveWhenFree(() => call("PUT", `${projectPath(p)}/streaming`, body, headers), form, message);
            apiKey.value = "";
            // The person moved on while it was saved: their page stays as it is.
            if (!document.contains(form)) return;
            announce("Streaming configuration saved.");
            go({ ...p, view: "logs" });
          } catch (error) {
            if (error.status === 412) {
              const text = await savedMeanwhile(p, view);
              keyField.querySelector(".hint").textContent = keyHint(view.destination);
              return say(message, text, "alert");
            }
            const text = error.status === 0
              ? `${error.message} Reload the page to see whether the configuration was saved.`
              : `Nothing was stored: ${refused(error, controls)}`;
            say(message, text, "alert");
          }
        });
      },
    },
    h("h2", { id: "streaming-form-heading", class: "visually-hidden" }, "Streaming configuration"),
    h("fieldset", { class: "choices" }, h("legend", {}, "Provider"), radio("cloudwatch", PROVIDERS.cloudwatch), radio("datadog", PROVIDERS.datadog)),
    field("Destination name", name),
    cloudwatch,
    datadog,
    message,
    h("div", { class: "actions" }, testButton, saveButton, link("Cancel", { ...p, view: "logs" })),
  );
  switchProvider();
  return form;
}

/** After a 412: what someone else saved meanwhile, read again so that saving once more replaces
 * it knowingly (the page's version becomes that one's), without losing what was typed. */
async function savedMeanwhile(p, view) {
  try {
    const now = await call("GET", `${projectPath(p)}/streaming`);
    view.version = now.version;
    view.destination = now.destination;
    const d = now.destination;
    const key = d?.datadog?.api_key_last4 ? `, its API key ending in ${d.datadog.api_key_last4}` : "";
    const what = d ? `it is now “${d.name}”, ${PROVIDERS[d.provider] || d.provider}${key}` : "it is now deleted";
    return `Nothing was stored: someone changed the streaming configuration meanwhile (${what}). Save again to replace it with what is typed here, or Cancel to keep it.`;
  } catch {
    return "Nothing was stored: someone changed the streaming configuration meanwhile. Reload the page to see it, then edit again.";
  }
}

/** Saves as `save` does, waiting out a deletion of the project's destination that is still
 * finishing (a save right after a Delete: the deleted credentials take seconds to go) as the
 * API asks, while `form` is on the page, rather than send the person back to press again. */
async function saveWhenFree(save, form, message) {
  for (let waited = 0; ; ) {
    try {
      return await save();
    } catch (error) {
      const wait = Math.min(error.retryAfter || 10, 30);
      if (error.code !== "credentials_being_deleted" || waited + wait > 60) throw error;
      say(message, `The deleted destination's credentials are still being removed: saving again in ${wait} s…`);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      waited += wait;
      // Left the page meanwhile: nothing is saved behind the person's back.
      if (!document.contains(form)) throw error;
    }
  }
}
