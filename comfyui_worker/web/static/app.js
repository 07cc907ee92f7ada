// The jobs page: a static page over the JSON API of comfyui_worker/webapi.py.
// No framework and no build step. Every value from the API reaches the page through
// textContent or an attribute, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const state = { tab: "active", templates: [], cards: new Map(), timer: null, imageMaxBytes: Infinity, imageLimit: "" };
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.name = body.error || "error";
    this.fields = body.fields || {}; // parameter name -> its own problem, shown beside it
  }
}

async function api(path, body) {
  const options = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/api/login") showLogin();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function announce(text, jobId) {
  // visible at the top of the page, and read out by screen readers (a live region)
  const notice = $("announce");
  notice.replaceChildren();
  window.setTimeout(() => {
    notice.append(text);
    if (jobId) {
      const link = el("a", { href: `#job-${jobId}`, text: "show it" });
      link.addEventListener("click", () => selectTab($("tab-active"), false));
      notice.append(" — ", link);
    }
  }, 50);
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 60 ? `${value.toFixed(1)} s` : `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

function paramsText(params) {
  return Object.entries(params || {})
    .map(([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" ") || "defaults";
}

// ---------------------------------------------------------------- sign-in

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  try {
    await api("/api/login", { token: $("token").value });
    $("token").value = "";
    $("login").hidden = true;
    await start();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
}

// ---------------------------------------------------------------- the form

function fillTemplates(catalog) {
  state.templates = catalog.templates;
  state.imageMaxBytes = catalog.image_max_bytes;
  state.imageLimit = catalog.image_limit;
  const select = $("template");
  select.replaceChildren(...catalog.templates.map((t) => el("option", { value: t.name, text: t.name })));
  const lanes = catalog.lanes || ["default"];
  $("lane").replaceChildren(...lanes.map((lane) => el("option", { value: lane, text: lane })));
  $("lane-field").hidden = lanes.length < 2;
  showParams();
}

function rangeText(param) {
  if (param.min !== undefined && param.max !== undefined) return `, ${param.min} to ${param.max}`;
  if (param.min !== undefined) return `, at least ${param.min}`;
  return param.max !== undefined ? `, at most ${param.max}` : "";
}

function paramHint(param) {
  if (param.type === "image") {
    return `an image file, ${state.imageLimit}${param.required ? ", required" : ""}` +
      (param.description ? ` — ${param.description}` : "");
  }
  return `${param.type}${param.required ? ", required" : `, default ${JSON.stringify(param.default)}`}` +
    rangeText(param) + (param.description ? ` — ${param.description}` : "");
}

function paramInput(param, attrs) {
  if (param.type === "image") return el("input", { ...attrs, type: "file", accept: "image/*", required: param.required });
  if (param.type === "bool") return el("input", { ...attrs, type: "checkbox", checked: param.default === true });
  if (param.type === "int" || param.type === "float") {
    return el("input", { ...attrs, type: "number", step: param.type === "int" ? "1" : "any", inputmode: "decimal",
      min: param.min, max: param.max });
  }
  if (param.choices) {
    const blank = param.required ? [] : [el("option", { value: "", text: `(default: ${param.default})` })];
    return el("select", attrs, ...blank, ...param.choices.map((choice) => el("option", { value: choice, text: choice })));
  }
  return el("input", { ...attrs, type: "text" });
}

function paramField(param) {
  const id = `param-${param.name}`;
  const attrs = { id, name: param.name, "data-type": param.type, "aria-describedby": `${id}-hint ${id}-error` };
  return el("div", { className: "field" },
    el("label", { for: id, text: param.name }), paramInput(param, attrs),
    el("span", { id: `${id}-hint`, className: "hint", text: paramHint(param) }),
    el("span", { id: `${id}-error`, className: "error field-error" }));
}

function markFields(fields) {
  // each field's own problem beside it (and announced with it); a clean field is cleared
  for (const input of $("params").querySelectorAll("[data-type]")) {
    const problem = fields[input.name];
    $(`${input.id}-error`).textContent = problem ? `${input.name}: ${problem}` : "";
    if (problem) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  const first = $("params").querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

function showParams() {
  const template = state.templates.find((t) => t.name === $("template").value);
  const legend = $("params").querySelector("legend");
  const fields = template ? template.params.map(paramField) : [];
  $("params").replaceChildren(legend, ...fields);
  if (!fields.length) $("params").append(el("p", { className: "hint", text: "This template has no parameters." }));
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function tooLarge(input) {
  // refused before reading it: a 40 MB photo never leaves the browser to be refused there
  const file = input.files[0];
  if (file.size <= state.imageMaxBytes) return null;
  return `${file.name} is ${(file.size / 1e6).toFixed(1)} MB; images may be ${state.imageLimit}`;
}

async function formBody() {
  const body = { template: $("template").value, lane: $("lane").value || "default", params: {}, images: [] };
  const large = {};
  for (const input of $("params").querySelectorAll("input")) {
    if (input.dataset.type === "image" && input.files.length && tooLarge(input)) large[input.name] = tooLarge(input);
  }
  if (Object.keys(large).length) {
    throw new ApiError(400, { error: "invalid-workflow", message: Object.values(large).join("; "), fields: large });
  }
  for (const input of $("params").querySelectorAll("[data-type]")) {
    const type = input.dataset.type;
    if (type === "image") {
      if (input.files.length) body.images.push({ name: input.name, base64: await readFile(input.files[0]) });
    } else if (type === "bool") {
      body.params[input.name] = input.checked;
    } else if (input.value.trim() !== "") {
      body.params[input.name] = type === "int" || type === "float" ? Number(input.value) : input.value;
    }
  }
  return body;
}

async function onSubmit(event) {
  event.preventDefault();
  const button = $("submit-button");
  $("submit-error").textContent = "";
  button.disabled = true;
  try {
    const created = await api("/api/jobs", await formBody());
    announce(`Job ${created.id} submitted`, created.id);
    $("submit-error").textContent = "";
    markFields({});
    await refresh();
  } catch (error) {
    $("submit-error").textContent = `${error.name}: ${error.message}`;
    markFields(error.fields || {});
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- tabs

function selectTab(tab, focus) {
  state.tab = tab.dataset.tab;
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
  }
  $("panel").setAttribute("aria-labelledby", tab.id);
  state.cards.clear();
  $("job-list").replaceChildren();
  if (focus) tab.focus();
  refresh();
}

function onTabKey(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const index = tabs.indexOf(event.target);
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
}

// ---------------------------------------------------------------- job cards

function outputList(job) {
  const items = job.outputs.map((output, index) => {
    const href = `/api/jobs/${encodeURIComponent(job.id)}/outputs/${index}`;
    const label = `${output.relative_path} (${output.media_type}, ${output.size_bytes} bytes)`;
    if (output.media_type.startsWith("image/")) {
      return el("li", {}, el("a", { href, target: "_blank", rel: "noopener" },
        el("img", { src: href, alt: `Output ${index + 1} of job ${job.id}: ${output.relative_path}`, loading: "lazy", width: 96, height: 96 })));
    }
    return el("li", {}, el("a", { href, download: output.filename, text: label }));
  });
  return items.length ? el("ul", { className: "outputs", "aria-label": "Outputs" }, ...items) : null;
}

function errorLine(job) {
  const error = job.error;
  if (!error) return null;
  const last = error.last_attempt ? ` (last attempt: ${error.last_attempt})` : "";
  return el("p", { className: "error" }, el("strong", { text: error.name }), `: ${error.message}${last}`);
}

function facts(job) {
  const rows = [["Job", job.id], ["Lane", job.lane], ["Params", paramsText(job.params)]];
  if (Object.keys(job.overrides || {}).length) rows.push(["Overrides", paramsText(job.overrides)]);
  rows.push(["Queued", seconds(job.queued_s)], ["Ran", seconds(job.run_s)], ["Total", seconds(job.total_s)]);
  if (job.error && job.error.node_id) rows.push(["Node", `${job.error.node_id} (${job.error.node_type || "?"})`]);
  if (job.retry_of) rows.push(["Retry of", job.retry_of]);
  return el("dl", { className: "facts" }, ...rows.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: String(value) })]));
}

async function act(verb, job, button) {
  button.disabled = true;
  try {
    const answer = await api(`/api/jobs/${encodeURIComponent(job.id)}/${verb}`, {});
    if (verb === "retry") announce(`Retry of ${job.id} submitted as ${answer.id}`, answer.id);
    else announce(`Job ${job.id}: ${STATUS_LABELS[answer.status] || answer.status}`);
    await refresh();
  } catch (error) {
    announce(`${verb} failed: ${error.message}`);
    button.disabled = false;
  }
}

async function loadTrail(job, details) {
  if (details.dataset.loaded) return;
  details.dataset.loaded = "1";
  try {
    const full = await api(`/api/jobs/${encodeURIComponent(job.id)}`);
    const attempts = full.attempts.map((a) => el("li", {},
      el("strong", { text: `Attempt ${a.number + 1}/${full.max_attempts}: ${a.status}` }),
      a.worker ? ` on ${a.worker}` : "", a.error ? el("p", { className: "error", text: a.error }) : null,
      a.log ? el("pre", { text: a.log }) : null));
    details.append(el("ol", {}, ...attempts));
    if (full.retries.length) details.append(el("p", { text: `Retried as: ${full.retries.join(", ")}` }));
    details.append(el("p", { text: "Input:" }), el("pre", { text: JSON.stringify(full.input, null, 2) }));
  } catch (error) {
    details.append(el("p", { className: "error", text: error.message }));
  }
}

const STATUS_LABELS = { waiting: "waiting for GPU" };

function card(job) {
  const title = `job-${job.id}-title`;
  const actions = el("div", { className: "actions" });
  if (["failed", "cancelled", "completed"].includes(job.status)) {
    const retry = el("button", { type: "button", className: "secondary", id: `retry-${job.id}`, text: "Retry",
      "aria-describedby": title });
    retry.addEventListener("click", () => act("retry", job, retry));
    actions.append(retry);
  }
  if (["queued", "waiting", "running"].includes(job.status)) {
    const cancel = el("button", { type: "button", className: "secondary", id: `cancel-${job.id}`, text: "Cancel",
      "aria-describedby": title });
    cancel.addEventListener("click", () => act("cancel", job, cancel));
    actions.append(cancel);
  }
  const details = el("details", { id: `details-${job.id}` }, el("summary", { text: "Attempts, trail and input" }));
  details.addEventListener("toggle", () => details.open && loadTrail(job, details));
  return el("li", { className: `job ${job.status}`, id: `job-${job.id}`, "data-job": job.id, "aria-labelledby": title },
    el("h3", { id: title }, el("span", { text: job.template || "(graph)" }),
      el("span", { className: "status", text: STATUS_LABELS[job.status] || job.status })),
    facts(job), errorLine(job), outputList(job), actions, details);
}

function render(jobs) {
  const list = $("job-list");
  const focused = document.activeElement && document.activeElement.id;
  const next = new Map();
  const nodes = jobs.map((job) => {
    const key = JSON.stringify(job);
    const old = state.cards.get(job.id);
    const node = old && old.key === key ? old.node : card(job);
    if (old && old.node !== node && old.node.querySelector("details[open]")) {
      node.querySelector("details").open = true;
    }
    next.set(job.id, { key, node });
    return node;
  });
  state.cards = next;
  const same = nodes.length === list.children.length && nodes.every((node, i) => list.children[i] === node);
  if (!same) list.replaceChildren(...nodes);  // untouched when nothing changed: focus stays put
  $("empty").hidden = jobs.length > 0;
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

async function refresh() {
  window.clearTimeout(state.timer);
  const tab = state.tab;
  try {
    const jobs = await api(`/api/jobs?tab=${tab}`);
    if (tab === state.tab) render(jobs);
    state.updated = new Date();
    $("connection").textContent = `Updated ${state.updated.toLocaleTimeString()}`;
    $("stale").hidden = true;
    $("job-list").classList.remove("stale-list");
  } catch (error) {
    // keep the last list on screen, marked as such, until LittleHorse answers again
    $("connection").textContent = `Cannot load jobs: ${error.message}`;
    const since = state.updated ? ` from ${state.updated.toLocaleTimeString()}` : "";
    $("stale").textContent = `Showing the last list${since}: it may be out of date.`;
    $("stale").hidden = false;
    $("job-list").classList.add("stale-list");
  }
  state.timer = window.setTimeout(refresh, REFRESH_MS);
}

async function start() {
  $("app").hidden = false;
  fillTemplates(await api("/api/templates"));
  await refresh();
}

async function main() {
  $("login-form").addEventListener("submit", onLogin);
  $("submit-form").addEventListener("submit", onSubmit);
  $("template").addEventListener("change", showParams);
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", onTabKey);
  }
  const session = await api("/api/session");
  if (session.login && !session.ok) showLogin();
  else await start();
}

main();
