// The Runs view: runs side by side, their curves compared; one run's metrics, confusion matrix (cells open their
// photos), most confidently wrong, calibration and the unsure threshold. A multi-label run shows each label's
// threshold and scores instead of the last three, and the photos whose labels it got wrong.

import { getJson, postJson, runUrl } from "./api.js";
import { $, busy, duration, el, emptyUntilTrained, fail, percent } from "./dom.js";
import { undo } from "./changes.js";
import { COLOURS, lineChart, number } from "./charts.js";
import { tile } from "./grid.js";
import { openPhoto } from "./viewer.js";
import { chooseRun, on, refreshRuns, state } from "./state.js";
import { watch } from "./train.js";

const details = new Map();
const signatures = new Map();
const compared = new Set();
let shownRun = null;
let cell = null;
let shownProject = null;

export function init() {
  on("runs", () => visible() && render());
  on("project", () => {
    if (state.project?.name === shownProject) return;
    shownProject = state.project?.name;
    details.clear();
    signatures.clear();
    compared.clear();
    shownRun = null;
    cell = null;
  });
  on("data", () => visible() && cell && openCell(cell.true, cell.predicted));
  $("threshold").addEventListener("input", showThreshold);
  $("resume-run").addEventListener("click", (event) => busy(event.target, resume));
  $("cell-undo").addEventListener("click", (event) => busy(event.target, () => undo()));
}

export function show() {
  render();
  refreshRuns().catch(fail);
}

const visible = () => !$("view-runs").hidden;

function render() {
  const empty = emptyUntilTrained("runs", state.runs.length === 0, "No runs yet",
    "Train a model in the Train view; every training run appears here with its metrics and mistakes.");
  if (empty) return;
  $("runs-table").tBodies[0].replaceChildren(...[...state.runs].reverse().map(runRow));
  const changed = forgetChangedRuns();
  if (state.run && (state.run !== shownRun || changed.includes(state.run))) loadRun(state.run);
  drawComparison();
}

function runRow(run) {
  const check = el("input", { type: "checkbox", "aria-label": `Compare ${run.name}`, checked: compared.has(run.name) });
  check.addEventListener("click", (event) => event.stopPropagation());
  check.addEventListener("change", () => {
    if (check.checked) compared.add(run.name);
    else compared.delete(run.name);
    drawComparison();
  });
  return el("tr", { dataset: { run: run.name }, class: run.name === state.run ? "selected" : null, onclick: () => chooseRun(run.name) },
    el("td", {}, check),
    el("td", {}, el("strong", { text: run.name })),
    el("td", { text: run.model ?? "" }),
    el("td", { text: run.data ?? "" }),
    el("td", { text: run.date ? String(run.date).replace("T", " ").slice(0, 16) : "" }),
    el("td", { text: run.epochs ?? "" }),
    el("td", { text: run.multi_label ? `mAP ${fixed(run.mean_average_precision)}` : percent(run.accuracy) }),
    el("td", { text: duration(run.time_s) }),
    el("td", {}, el("span", { class: `state ${run.state ?? ""}`, text: run.state ?? "" })));
}

/** Drop the details of runs that changed since they were read (a resumed or finished run); returns their names. */
function forgetChangedRuns() {
  const changed = [];
  for (const run of state.runs) {
    const signature = `${run.epochs}|${run.state}|${run.accuracy}`;
    if (signatures.has(run.name) && signatures.get(run.name) !== signature) {
      details.delete(run.name);
      changed.push(run.name);
    }
    signatures.set(run.name, signature);
  }
  return changed;
}

async function detail(name) {
  if (!details.has(name)) details.set(name, await getJson(runUrl(state.project.name, name)));
  return details.get(name);
}

async function drawComparison() {
  const names = [...compared].filter((name) => state.runs.some((run) => run.name === name));
  $("compare").hidden = names.length === 0;
  if (!names.length) return;
  try {
    const runs = await Promise.all(names.map(detail));
    lineChart($("compare-chart"), runs.map((run, i) => ({
      name: run.name,
      colour: COLOURS[i % COLOURS.length],
      points: run.history.map((row) => [number(row.epoch), number(row.val_accuracy)]),
    })), { xLabel: "epoch", xMin: 1, yMin: 0, yMax: 1, percent: true });
  } catch (error) {
    fail(error);
  }
}

async function loadRun(name) {
  shownRun = name;
  cell = null;
  $("cell").hidden = true;
  $("run-detail").hidden = false;
  $("run-title").textContent = name;
  $("run-metrics").replaceChildren(el("span", { class: "spinner" }), " Reading the run…");
  let run;
  try {
    run = await detail(name);
  } catch (error) {
    fail(error);
    return;
  }
  if (shownRun !== name) return;
  for (const card of ["confusion-card", "calibration-card", "threshold-card"]) $(card).hidden = run.multi_label;
  $("labels-card").hidden = !run.multi_label;
  $("wrong-title").textContent = run.multi_label ? "Labels most surely wrong" : "Most confidently wrong";
  showMetrics(run);
  if (run.multi_label) {
    showLabelScores(run);
  } else {
    showConfusion(run);
    showCalibration(run);
    showCoverage(run);
  }
  loadWrong(name);
}

const fixed = (value) => (value === null || value === undefined ? "–" : Number(value).toFixed(3));

function showMetrics(run) {
  const metrics = run.metrics || {};
  const items = run.multi_label ? [
    ["Mean average precision", fixed(metrics.mean_average_precision)],
    ["Subset accuracy", percent(metrics.subset_accuracy)],
    ["Hamming loss", fixed(metrics.hamming_loss)],
    ["Micro F1", fixed(metrics.micro_f1)],
    ["Epochs", String(run.history?.length ?? "–")],
  ] : [
    ["Accuracy", percent(metrics.accuracy)],
    ["Macro F1", fixed(metrics.macro_f1)],
    ["Log loss", fixed(metrics.log_loss)],
    ["Calibration error", percent(run.calibration?.ece)],
    ["Epochs", String(run.history?.length ?? "–")],
  ];
  $("run-metrics").replaceChildren(...items.map(([term, value]) =>
    el("div", {}, el("dt", { text: term }), el("dd", { text: value }))));
}

/** A multi-label run's table: each label's threshold, precision, recall, F1, average precision and photos. */
function showLabelScores(run) {
  const rows = run.metrics?.per_class || [];
  if (!rows.length) {
    $("label-scores").replaceChildren(el("caption", { class: "muted", text: "None yet: the run has not finished." }));
    return;
  }
  const columns = ["Label", "Threshold", "Precision", "Recall", "F1", "AP", "Photos"];
  const head = el("tr", {}, ...columns.map((name) => el("th", { scope: "col", text: name })));
  $("label-scores").replaceChildren(el("thead", {}, head), el("tbody", {}, rows.map((row) =>
    el("tr", { dataset: { label: row.class } },
      el("th", { scope: "row", text: row.class }),
      el("td", { text: percent(row.threshold) }),
      el("td", { text: percent(row.precision) }),
      el("td", { text: percent(row.recall) }),
      el("td", { text: fixed(row.f1) }),
      el("td", { text: fixed(row.average_precision) }),
      el("td", { text: String(row.support) })))));
}

function showConfusion(run) {
  const classes = run.classes || [];
  const matrix = run.confusion || [];
  if (!matrix.length) {
    $("confusion").replaceChildren(el("caption", { class: "muted", text: "None yet: the run has not finished." }));
    return;
  }
  const head = el("tr", {}, el("th", { text: "true ↓ predicted →" }), ...classes.map((name) => el("th", { scope: "col", text: name })));
  const rows = matrix.map((row, i) => {
    const total = row.reduce((sum, value) => sum + value, 0) || 1;
    return el("tr", {}, el("th", { scope: "row", text: classes[i] }), ...row.map((count, j) => {
      const share = Math.round((100 * count) / total);
      const colour = i === j ? "var(--good)" : "var(--bad)";
      return el("td", {}, el("button", {
        type: "button",
        dataset: { true: classes[i], predicted: classes[j] },
        "aria-pressed": "false",
        title: `${count} ${classes[i]} photos predicted ${classes[j]}`,
        style: `background: color-mix(in srgb, ${colour} ${Math.max(6, share)}%, var(--surface)); color: ${share > 55 ? "#fff" : "inherit"}`,
        text: String(count),
        onclick: () => openCell(classes[i], classes[j]),
      }));
    }));
  });
  $("confusion").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

async function openCell(trueClass, predicted) {
  cell = { true: trueClass, predicted };
  for (const button of $("confusion").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.true === trueClass && button.dataset.predicted === predicted));
  }
  $("cell").hidden = false;
  $("cell-title").textContent = `${trueClass} predicted as ${predicted}`;
  $("cell-grid").replaceChildren(el("span", { class: "spinner" }));
  try {
    const query = new URLSearchParams({ true: trueClass, predicted });
    const { images } = await getJson(runUrl(state.project.name, shownRun, `/images?${query}`));
    showPhotos($("cell-grid"), images, "None: no photo of the validation set falls in this cell.");
  } catch (error) {
    $("cell-grid").replaceChildren();
    fail(error);
  }
}

async function loadWrong(name) {
  try {
    const { images } = await getJson(runUrl(state.project.name, name, "/images?wrong=1&limit=20"));
    showPhotos($("wrong-grid"), images, "None: the model got every validation photo right.");
  } catch (error) {
    fail(error);
  }
}

function showPhotos(container, images, emptyText) {
  if (!images.length) {
    container.replaceChildren(el("p", { class: "muted", text: emptyText }));
    return;
  }
  const multiLabel = details.get(shownRun)?.multi_label;
  container.replaceChildren(...images.map((image) => {
    const predicted = multiLabel ? image.predicted.split(";").join(", ") || "no label" : image.predicted;
    const caption = `${predicted} ${percent(image.confidence, 0)}`;
    const figure = tile(state.project.name, image, { caption });
    const text = multiLabel
      ? `True labels ${image.true.split(";").join(", ")}; predicted ${predicted}; its surest wrong call ${percent(image.confidence)}.`
      : `True class ${image.true}; predicted ${image.predicted} with ${percent(image.confidence)} confidence.`;
    if (image.id) figure.addEventListener("click", () => openPhoto({ ...image, class: image.true }, text));
    return figure;
  }));
}

function showCalibration(run) {
  const bins = run.calibration?.bins || [];
  $("calibration-text").textContent = run.calibration
    ? `Expected calibration error ${percent(run.calibration.ece)}: when the model says 80 %, it is right about that often if this is small.`
    : "None yet: the run has not finished.";
  lineChart($("reliability-chart"), [
    { name: "perfect", points: [[0, 0], [1, 1]], colour: "#98a0b0", dashed: true },
    { name: "this run", points: bins.map((bin) => [bin.confidence, bin.accuracy]) },
  ], { xMin: 0, xMax: 1, yMin: 0, yMax: 1, percent: true, xPercent: true, xLabel: "confidence" });
}

function showCoverage(run) {
  const rows = sortedCoverage(run);
  const slider = $("threshold");
  slider.max = String(Math.max(0, rows.length - 1));
  const wanted = run.min_confidence ?? 0;
  const start = rows.findIndex((row) => row.threshold >= wanted);
  slider.value = String(start === -1 ? 0 : start);
  slider.disabled = rows.length === 0;
  showThreshold();
}

/** The run's coverage rows by threshold, lowest (everything answered) first. */
function sortedCoverage(run) {
  return [...(run.coverage || [])].sort((a, b) => a.threshold - b.threshold);
}

function showThreshold() {
  const run = details.get(shownRun);
  const rows = run ? sortedCoverage(run) : [];
  const row = rows[Number($("threshold").value)];
  if (!row) {
    $("threshold-value").textContent = "";
    $("threshold-text").textContent = "None yet: the run has not finished.";
    $("coverage-chart").replaceChildren();
    return;
  }
  $("threshold-value").textContent = percent(row.threshold, 0);
  $("threshold-text").textContent = `It answers ${percent(row.coverage, 0)} of the photos and is right on ${percent(row.accuracy)} of those; the rest are “unsure”. Serve it with --min-confidence ${+row.threshold.toFixed(3)}.`;
  lineChart($("coverage-chart"), [
    { name: "coverage", points: rows.map((r) => [r.threshold, r.coverage]) },
    { name: "accuracy", points: rows.map((r) => [r.threshold, r.accuracy]) },
  ], { xMin: 0, xMax: 1, yMin: 0, yMax: 1, percent: true, xPercent: true, xLabel: "threshold", marker: [row.threshold, row.coverage] });
}

async function resume() {
  const epochs = Number($("resume-epochs").value) || undefined;
  const job = await postJson(runUrl(state.project.name, shownRun, "/resume"), epochs ? { epochs } : {});
  location.hash = "#train";
  watch(job);
}
