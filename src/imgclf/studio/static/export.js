// The Export view: build and download the ONNX file and export.json; the serve command and a Python snippet.

import { enc, getJson, postJson, runUrl, url } from "./api.js";
import { $, busy, el, emptyUntilTrained, fail, toast } from "./dom.js";
import { on, state } from "./state.js";

let shownRun = null;

export function init() {
  on("runs", () => visible() && render());
  $("build-export").addEventListener("click", (event) => busy(event.target, build));
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => copy($(button.dataset.copy).textContent));
  }
}

export function show() {
  shownRun = null;
  render();
}

const visible = () => !$("view-export").hidden;

function render() {
  const empty = emptyUntilTrained("export", !state.run, "Nothing to export yet",
    "Train a model first; its ONNX file and the command to serve it will be here.");
  if (empty) return;
  if (state.run === shownRun) return;
  shownRun = state.run;
  $("export-files").replaceChildren();
  $("export-status").textContent = "";
  loadSnippets(state.run);
}

async function loadSnippets(run) {
  try {
    const snippets = await getJson(runUrl(state.project.name, run, "/snippet"));
    if (run !== shownRun) return;
    $("serve-snippet").textContent = snippets.serve;
    $("python-snippet").textContent = snippets.python;
  } catch (error) {
    fail(error);
  }
}

async function build() {
  const run = state.run;
  $("export-status").textContent = "Exporting to ONNX and checking it against PyTorch…";
  try {
    const { files } = await postJson(runUrl(state.project.name, run, "/export"), {});
    $("export-status").textContent = "Ready: checked against PyTorch.";
    $("export-files").replaceChildren(...files.map((file) =>
      el("li", {}, el("a", { class: "button secondary", href: url(runUrl(state.project.name, run, `/export/${enc(file)}`)), download: file, text: `Download ${file}` }))));
  } catch (error) {
    $("export-status").textContent = "";
    throw error;
  }
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied.");
  } catch {
    const range = document.createRange();
    range.selectNodeContents(document.activeElement.previousElementSibling || document.body);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    toast("Selected: press Ctrl+C to copy.");
  }
}
