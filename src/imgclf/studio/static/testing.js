// The Test view: photos dropped or picked, and the webcam live, answered by the chosen run; Grad-CAM on demand.
// A multi-label run answers with a set of labels: each label's probability against its threshold, and Grad-CAM
// per label.

import { enc, postForm, runUrl } from "./api.js";
import { $, bars, busy, el, emptyUntilTrained, fail, percent } from "./dom.js";
import { grabFrame, startCamera } from "./webcam.js";
import { on, state } from "./state.js";

const camera = { stop: null, running: false, frames: [], overlay: null };

export function init() {
  on("runs", () => visible() && render());
  $("test-file").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    predictFiles(files);
  });
  const drop = $("test-drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    predictFiles([...event.dataTransfer.files]);
  });
  $("webcam-start").addEventListener("click", (event) => busy(event.target, startWebcam));
  $("webcam-stop").addEventListener("click", stopWebcam);
  $("webcam-explain").addEventListener("click", (event) => busy(event.target, explainFrame));
}

export function show() {
  render();
}

export function hide() {
  stopWebcam();
}

const visible = () => !$("view-test").hidden;

function render() {
  const empty = emptyUntilTrained("test", !state.run, "Nothing to test yet",
    "Train a model first; then drop photos here or hold things up to the webcam.");
  if (empty) stopWebcam();
}

const predictUrl = () => runUrl(state.project.name, state.run, "/predict");
const explainUrl = (label) => runUrl(state.project.name, state.run, label ? `/explain?label=${enc(label)}` : "/explain");

async function predictFiles(files) {
  for (const file of files) {
    const card = resultCard(file);
    $("test-results").prepend(card);
    try {
      const answer = await postForm(predictUrl(), { file });
      fillCard(card, file, answer);
    } catch (error) {
      card.querySelector(".answer").replaceChildren(el("span", { class: "error", text: error.message }));
    }
  }
}

function resultCard(file) {
  const preview = el("img", { src: URL.createObjectURL(file), alt: file.name });
  preview.addEventListener("load", () => URL.revokeObjectURL(preview.src), { once: true });
  return el("li", { class: "result card", dataset: { file: file.name } },
    preview,
    el("div", {},
      el("div", { class: "muted", text: file.name }),
      el("p", { class: "answer" }, el("span", { class: "spinner" }), " Asking the model…"),
      el("ol", { class: "bars" })));
}

function fillCard(card, file, answer) {
  const confidence = answer.labels ? "" : percent(answer.confidence);
  card.querySelector(".answer").replaceChildren(
    el("span", { class: "label", text: shownLabel(answer) }), " ", el("span", { class: "muted", text: confidence }));
  card.querySelector(".bars").replaceChildren(...answerBars(answer));
  if (!answer.labels) {
    card.lastChild.append(explainButton(file, "Where did it look?", null, `Grad-CAM of ${file.name}`));
    return;
  }
  const top = Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1])[0][0];
  for (const label of answer.labels.length ? answer.labels : [top]) {
    const caption = `${label}: ${percent(answer.probabilities[label])} (threshold ${percent(answer.thresholds[label])})`;
    card.lastChild.append(explainButton(file, `Where is ${label}?`, label, `Grad-CAM of ${label} in ${file.name}`, caption));
  }
}

/** What the model answered: the label (or "unsure"); a multi-label run's labels, or "no label". */
function shownLabel(answer) {
  if (answer.labels) return answer.labels.join(", ") || "no label";
  return answer.unsure ? "unsure" : answer.label;
}

/** The probability bars; a multi-label run's show every label, its threshold marked and the labels given green. */
function answerBars(answer) {
  if (!answer.labels) return bars(answer.probabilities, answer.label);
  return bars(answer.probabilities, null, Infinity).map((item) => {
    const label = item.dataset.class;
    const threshold = answer.thresholds[label];
    item.classList.toggle("top", answer.labels.includes(label));
    item.title = `${label}: given at ${percent(threshold)} or more`;
    item.querySelector(".track").append(el("span", { class: "threshold", style: `left: ${(100 * threshold).toFixed(2)}%` }));
    return item;
  });
}

/** A button that replaces itself with the Grad-CAM overlay of `label` (null: the predicted class) and `caption`. */
function explainButton(file, text, label, alt, caption = "") {
  const button = el("button", { type: "button", class: "button secondary", text, dataset: { label: label ?? "" } });
  button.addEventListener("click", () => busy(button, async () => {
    const blob = await postForm(explainUrl(label), { file }, "blob");
    const overlay = el("img", { class: "overlay", src: URL.createObjectURL(blob), alt });
    button.replaceWith(caption ? el("figure", { class: "explained" }, overlay, el("figcaption", { text: caption })) : overlay);
  }));
  return button;
}

async function startWebcam() {
  camera.stop = await startCamera($("webcam-video"));
  camera.running = true;
  $("webcam-video").hidden = false;
  $("webcam-placeholder").hidden = true;
  $("webcam-start").hidden = true;
  $("webcam-stop").hidden = false;
  $("webcam-explain").disabled = false;
  $("webcam-label").textContent = "Watching…";
  loop();
}

function stopWebcam() {
  camera.running = false;
  camera.stop?.();
  camera.stop = null;
  $("webcam-start").hidden = false;
  $("webcam-stop").hidden = true;
  $("webcam-explain").disabled = true;
  $("webcam-overlay").hidden = true;
  $("webcam-video").hidden = true;
  $("webcam-placeholder").hidden = false;
  $("webcam-rate").textContent = "";
}

// One request in flight at a time: the next frame is taken when the answer to the last one arrives, so a slow
// model lowers the rate instead of piling requests up.
async function loop() {
  while (camera.running) {
    const started = performance.now();
    try {
      const frame = await grabFrame($("webcam-video"));
      const answer = await postForm(predictUrl(), { file: new File([frame], "webcam.jpg", { type: "image/jpeg" }) });
      if (!camera.running) break;
      showLive(answer);
    } catch (error) {
      stopWebcam();
      fail(error);
      break;
    }
    const spent = performance.now() - started;
    if (spent < 50) await new Promise((resolve) => setTimeout(resolve, 50 - spent));
  }
}

function showLive(answer) {
  const now = performance.now();
  camera.frames = [...camera.frames.filter((time) => now - time < 2000), now];
  const rate = camera.frames.length > 1 ? (1000 * (camera.frames.length - 1)) / (now - camera.frames[0]) : 0;
  $("webcam-label").textContent = shownLabel(answer);
  $("webcam-label").dataset.label = answer.label;
  const speed = camera.frames.length > 1 ? `${rate.toFixed(1)} per second` : "measuring the speed…";
  $("webcam-rate").textContent = answer.labels ? speed : `${percent(answer.confidence)} · ${speed}`;
  $("webcam-bars").replaceChildren(...answerBars(answer));
}

async function explainFrame() {
  const frame = await grabFrame($("webcam-video"), 480);
  const blob = await postForm(explainUrl(), { file: new File([frame], "webcam.jpg", { type: "image/jpeg" }) }, "blob");
  if (camera.overlay) URL.revokeObjectURL(camera.overlay);
  camera.overlay = URL.createObjectURL(blob);
  $("webcam-overlay").src = camera.overlay;
  $("webcam-overlay").hidden = false;
  setTimeout(() => { $("webcam-overlay").hidden = true; }, 4000);
}
