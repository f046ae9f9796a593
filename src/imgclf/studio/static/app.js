// imgclf studio: the page. Views live in their own modules; this one holds the project bar, the tabs and the help.

import { getJson, postJson } from "./api.js";
import { $, el, fail, isTyping, openDialog, toast } from "./dom.js";
import { emit, on, refreshRuns, state } from "./state.js";
import * as data from "./data.js";
import * as train from "./train.js";
import * as runs from "./runs.js";
import * as testing from "./testing.js";
import * as exporting from "./export.js";

const VIEWS = { data, train, runs, test: testing, export: exporting };
const PROJECT_KEY = "imgclf-studio-project";

async function loadProjects(preferred) {
  const { projects } = await getJson("projects");
  state.projects = projects;
  const wanted = preferred || localStorage.getItem(PROJECT_KEY);
  const project = projects.find((p) => p.name === wanted) || projects[0] || null;
  await selectProject(project);
}

async function selectProject(project) {
  state.project = project;
  state.run = null;
  state.runs = [];
  if (project) localStorage.setItem(PROJECT_KEY, project.name);
  const select = $("project-select");
  select.replaceChildren(...state.projects.map((p) => el("option", { value: p.name, text: p.name })));
  select.hidden = !project;
  if (project) select.value = project.name;
  $("welcome").hidden = Boolean(project);
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("disabled", !project);
  emit("project");
  if (project) await refreshRuns().catch(fail);
  route();
}

async function createProject(name, folder) {
  const summary = folder
    ? await postJson("projects/import", { name, folder })
    : await postJson("projects", { name });
  toast(`Project ${summary.name} created. ${summary.images ? "" : "Now add classes and photos."}`);
  await loadProjects(summary.name);
  if (location.hash !== "#data") location.hash = "#data";
}

function route() {
  const wanted = location.hash.slice(1);
  const name = state.project && wanted in VIEWS ? wanted : state.project ? "data" : null;
  for (const [key, view] of Object.entries(VIEWS)) {
    const section = $(`view-${key}`);
    const visible = key === name;
    if (visible && section.hidden) view.show();
    if (!visible && !section.hidden) view.hide?.();
    section.hidden = !visible;
  }
  for (const link of document.querySelectorAll("#tabs a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function wireProjectBar() {
  $("project-select").addEventListener("change", (event) => {
    selectProject(state.projects.find((p) => p.name === event.target.value)).catch(fail);
  });
  $("new-project").addEventListener("click", () => {
    $("project-form").reset();
    openDialog($("project-dialog"));
  });
  $("project-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("project-name").value.trim();
    const folder = $("project-folder").value.trim();
    const button = event.submitter;
    button.disabled = true;
    try {
      await createProject(name, folder);
      $("project-dialog").close();
    } catch (error) {
      fail(error);
    } finally {
      button.disabled = false;
    }
  });
  $("welcome-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createProject($("welcome-name").value.trim()).catch(fail);
  });
}

function wireHelp() {
  $("help-button").addEventListener("click", () => openDialog($("help")));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "?" || isTyping(event)) return;
    event.preventDefault();
    openDialog($("help"));
  });
}

/** Fill every run picker (Test, Export) with the project's runs, the chosen one selected. */
function fillRunSelects() {
  for (const select of document.querySelectorAll(".run-select")) {
    select.replaceChildren(...[...state.runs].reverse().map((run) =>
      el("option", { value: run.name, text: run.accuracy === null || run.accuracy === undefined ? run.name : `${run.name} (${(100 * run.accuracy).toFixed(1)} %)` })));
    if (state.run) select.value = state.run;
  }
}

function start() {
  wireProjectBar();
  wireHelp();
  for (const view of Object.values(VIEWS)) view.init();
  on("runs", fillRunSelects);
  for (const select of document.querySelectorAll(".run-select")) {
    select.addEventListener("change", () => {
      state.run = select.value;
      emit("runs");
    });
  }
  window.addEventListener("hashchange", route);
  // A photo dropped beside a drop zone would otherwise replace the page with itself.
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
  loadProjects().catch(fail);
}

start();
