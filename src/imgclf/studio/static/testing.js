// The Test view: photos dropped or picked, and the webcam live, answered by the chosen run; Grad-CAM on demand.

import { postForm, runUrl } from "./api.js";
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
const explainUrl = () => runUrl(state.project.name, state.run, "/explain");

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
  const label = answer.unsure ? "unsure" : answer.label;
  card.querySelector(".answer").replaceChildren(
    el("span", { class: "label", text: label }), " ", el("span", { class: "muted", text: percent(answer.confidence) }));
  card.querySelector(".bars").replaceChildren(...bars(answer.probabilities, answer.label));
  const button = el("button", { type: "button", class: "button secondary", text: "Where did it look?" });
  button.addEventListener("click", () => busy(button, async () => {
    const blob = await postForm(explainUrl(), { file }, "blob");
    const overlay = el("img", { class: "overlay", src: URL.createObjectURL(blob), alt: `Grad-CAM of ${file.name}` });
    button.replaceWith(overlay);
  }));
  card.lastChild.append(button);
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
  $("webcam-label").textContent = answer.unsure ? "unsure" : answer.label;
  $("webcam-label").dataset.label = answer.label;
  const speed = camera.frames.length > 1 ? `${rate.toFixed(1)} per second` : "measuring the speed…";
  $("webcam-rate").textContent = `${percent(answer.confidence)} · ${speed}`;
  $("webcam-bars").replaceChildren(...bars(answer.probabilities, answer.label));
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
