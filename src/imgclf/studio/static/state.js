// What the views share: the project, its runs, the chosen run; views listen for changes.

import { getJson, projectUrl } from "./api.js";

export const state = { projects: [], project: null, runs: [], run: null };

const listeners = {};

export function on(name, listener) {
  (listeners[name] ||= []).push(listener);
}

export function emit(name) {
  for (const listener of listeners[name] || []) listener();
}

/** Reload the current project's summary (class counts, audit state) and tell the views. */
export async function refreshProject() {
  if (!state.project) return;
  state.project = await getJson(projectUrl(state.project.name));
  const index = state.projects.findIndex((p) => p.name === state.project.name);
  if (index >= 0) state.projects[index] = state.project;
  emit("project");
}

/** Reload the current project's runs; keeps the chosen run when it still exists, else picks the newest. */
export async function refreshRuns() {
  if (!state.project) return;
  const { runs } = await getJson(projectUrl(state.project.name, "/runs"));
  state.runs = runs;
  const names = runs.map((run) => run.name);
  if (!names.includes(state.run)) {
    const usable = runs.filter((run) => run.state !== "failed" && run.accuracy !== null && run.accuracy !== undefined);
    state.run = (usable.at(-1) || runs.at(-1) || {}).name || null;
  }
  emit("runs");
}

export function chooseRun(name) {
  state.run = name;
  emit("runs");
}

export const classNames = () => (state.project ? state.project.classes.map((c) => c.name) : []);
