// The Train view: recipes, the options form, a live job (progress, ETA, curves from server-sent events), the queue.

import { enc, follow, getJson, postJson, projectUrl } from "./api.js";
import { $, busy, duration, el, fail, toast } from "./dom.js";
import { drawHistory, number } from "./charts.js";
import { chooseRun, on, refreshRuns, state } from "./state.js";

const ACTIVE = new Set(["queued", "running"]);
// Offered with every recipe, empty unless the user sets them (then the recipe's or imgclf train's default holds).
const COMMON = { epochs: null, image_size: null };
const COMMON_HINTS = { epochs: "default", image_size: "model's" };
const live = { job: null, stop: null, history: [] };
let recipes = [];
let recipe = null;
let polling = null;

export function init() {
  on("project", () => {
    if (live.job && live.job.project !== state.project?.name) forget();
  });
  $("train-form").addEventListener("submit", startTraining);
  $("cancel-training").addEventListener("click", (event) => live.job && busy(event.target, () => cancel(live.job.id)));
}

export async function show() {
  if (!recipes.length) await loadRecipes();
  await loadJobs();
  polling = setInterval(() => loadJobs(), 3000);
}

export function hide() {
  clearInterval(polling);
}

async function loadRecipes() {
  try {
    recipes = await getJson("recipes");
    if (!Array.isArray(recipes)) recipes = recipes.recipes || [];
  } catch (error) {
    fail(error);
    return;
  }
  $("recipes").replaceChildren(...recipes.map((r) =>
    el("button", { type: "button", role: "radio", class: "recipe", "aria-checked": "false", dataset: { recipe: r.name }, onclick: () => pickRecipe(r) },
      el("strong", { text: r.title || r.name }), el("span", { text: r.description || "" }))));
  if (recipes.length) pickRecipe(recipes[0]);
}

function pickRecipe(chosen) {
  recipe = chosen;
  for (const card of $("recipes").children) card.setAttribute("aria-checked", String(card.dataset.recipe === chosen.name));
  $("recipe-title").textContent = `${chosen.title || chosen.name}: options`;
  const options = { ...COMMON, ...(chosen.options || {}) };
  const fields = Object.entries(options).map(([name, value]) => field(name, value, value === null ? COMMON_HINTS[name] : null));
  if (chosen.name === "advanced") {
    fields.push(el("label", { for: "extra-options" }, "More options, as JSON (any option of imgclf train, e.g. {\"lr\": 0.001})",
      el("textarea", { id: "extra-options", spellcheck: "false", placeholder: "{}" })));
  }
  $("recipe-options").replaceChildren(...fields);
}

function field(name, value, hint = null) {
  const id = `option-${name}`;
  const label = name.replaceAll("_", " ");
  if (hint) {
    return el("label", { for: id }, label,
      el("input", { id, type: "number", min: "1", placeholder: hint, dataset: { option: name, kind: "number" } }));
  }
  if (typeof value === "boolean") {
    return el("label", { class: "check", for: id }, el("input", { id, type: "checkbox", checked: value, dataset: { option: name, kind: "boolean" } }), label);
  }
  const kind = typeof value === "number" ? "number" : value === null || typeof value === "string" ? "text" : "json";
  const shown = kind === "json" ? JSON.stringify(value) : value ?? "";
  return el("label", { for: id }, label,
    el("input", { id, type: kind === "number" ? "number" : "text", step: kind === "number" ? "any" : null, value: shown, dataset: { option: name, kind } }));
}

function readOptions() {
  const options = {};
  for (const input of $("recipe-options").querySelectorAll("[data-option]")) {
    const { option, kind } = input.dataset;
    if (kind === "boolean") options[option] = input.checked;
    else if (input.value === "") continue; // left empty: the recipe's or the library's default
    else if (kind === "number") options[option] = Number(input.value);
    else if (kind === "json") options[option] = JSON.parse(input.value);
    else options[option] = input.value;
  }
  const extra = $("extra-options");
  if (extra && extra.value.trim()) {
    try {
      Object.assign(options, JSON.parse(extra.value));
    } catch {
      throw new Error(`The extra options are not JSON. Received: ${extra.value.slice(0, 60)}. Write them as {"name": value}.`);
    }
  }
  return options;
}

async function startTraining(event) {
  event.preventDefault();
  if (!recipe) return;
  const job = await busy($("start-training"), () =>
    postJson(projectUrl(state.project.name, "/train"), { recipe: recipe.name, options: readOptions() }));
  if (job) {
    watch(job);
    loadJobs();
  }
}

function forget() {
  live.stop?.();
  live.job = null;
  $("live").hidden = true;
}

/** Follow `job` live in the panel: progress, time left and the curves as epochs end. */
export function watch(job) {
  live.stop?.();
  live.job = job;
  live.history = [];
  $("live").hidden = false;
  $("train-message").hidden = true;
  $("cancel-training").hidden = false;
  $("live-title").textContent = `${title(job)}: ${job.state === "queued" ? "waiting for the job before it" : "starting…"}`;
  setBar(0);
  $("train-progress").textContent = "";
  $("train-eta").textContent = "";
  drawHistory($("loss-chart"), $("accuracy-chart"), []);
  live.stop = follow(job.id, (message) => onEvent(job, message));
}

function title(job) {
  return job.kind === "resume" ? `Resuming ${job.run}` : "Training";
}

/** A job's time (ISO text or seconds since 1970) as a local clock time. */
function clock(value) {
  if (!value) return "";
  const date = new Date(typeof value === "number" ? value * 1000 : value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString();
}

function onEvent(job, message) {
  const handlers = {
    queued: () => { $("live-title").textContent = `${title(job)}: queued behind another job`; },
    started: () => { $("live-title").textContent = `${title(job)}: training…`; },
    step: () => showStep(message),
    epoch: () => showEpoch(message),
    done: () => finished(job, message),
    error: () => stopped(job, `Failed: ${message.message}`, true),
    cancelled: () => stopped(job, "Cancelled: the run keeps its last complete epoch; resume it from Runs.", false),
  };
  handlers[message.type]?.();
}

function setBar(fraction) {
  $("train-bar").style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
}

function showStep(step) {
  const { epoch, epochs, steps } = step;
  setBar(epochs ? (epoch - 1 + (steps ? step.step / steps : 0)) / epochs : 0);
  $("train-progress").textContent = `Epoch ${epoch} of ${epochs}${steps ? ` · step ${step.step} of ${steps}` : ""}`;
  $("train-eta").textContent = step.eta_s === null || step.eta_s === undefined ? "" : `about ${duration(step.eta_s)} left`;
}

function showEpoch(row) {
  live.history.push(row);
  drawHistory($("loss-chart"), $("accuracy-chart"), live.history);
  const accuracy = number(row.val_accuracy);
  $("live-title").textContent = `${title(live.job)}: epoch ${row.epoch} done${Number.isFinite(accuracy) ? `, validation accuracy ${(100 * accuracy).toFixed(1)} %` : ""}`;
}

async function finished(job, message) {
  setBar(1);
  $("cancel-training").hidden = true;
  $("train-eta").textContent = "";
  $("live-title").textContent = `Finished: ${message.run || job.run || ""}`;
  $("train-progress").textContent = `${live.history.length} epochs trained`;
  await refreshRuns().catch(fail);
  if (message.run) chooseRun(message.run);
  toast(`Training finished: ${message.run || "the run"} is ready.`, { action: { label: "See the run", run: () => { location.hash = "#runs"; } } });
  loadJobs();
}

function stopped(job, text, error) {
  $("cancel-training").hidden = true;
  $("train-eta").textContent = "";
  $("train-message").textContent = text;
  $("train-message").hidden = !error;
  $("live-title").textContent = `${title(job)}: ${error ? "failed" : "cancelled"}`;
  if (!error) toast(text);
  refreshRuns().catch(fail);
  loadJobs();
}

async function cancel(id) {
  await postJson(`jobs/${enc(id)}/cancel`, {});
  await loadJobs();
}

async function loadJobs() {
  if (!state.project) return;
  let jobs;
  try {
    ({ jobs } = await getJson("jobs"));
  } catch (error) {
    fail(error);
    clearInterval(polling);
    return;
  }
  const mine = jobs.filter((job) => job.project === state.project.name);
  $("jobs-empty").hidden = mine.length > 0;
  $("jobs").hidden = mine.length === 0;
  $("jobs").tBodies[0].replaceChildren(...[...mine].reverse().map(jobRow));
  const running = mine.find((job) => job.state === "running" && job.kind !== "audit");
  if (running && !live.job) watch(running);
}

function jobRow(job) {
  const progress = !job.progress ? ""
    : job.progress.epochs ? `epoch ${job.progress.epoch} of ${job.progress.epochs}`
      : job.progress.steps ? `step ${job.progress.step} of ${job.progress.steps}` : "";
  const active = ACTIVE.has(job.state);
  return el("tr", { dataset: { job: job.id } },
    el("td", { text: job.kind }),
    el("td", {}, el("span", { class: `state ${job.state}`, text: job.state })),
    el("td", { text: job.run || "" }),
    el("td", { text: progress }),
    el("td", { text: clock(job.started) }),
    el("td", {},
      active && live.job?.id !== job.id && job.kind !== "audit"
        ? el("button", { type: "button", class: "button secondary", text: "Watch", onclick: () => watch(job) }) : null,
      active ? el("button", { type: "button", class: "button danger", text: "Cancel", onclick: (event) => busy(event.target, () => cancel(job.id)) }) : null));
}
