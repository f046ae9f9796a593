// The Data view: classes and their counts, adding photos (files, folders, webcam), the audit, and labelling.

import { enc, follow, getJson, isFinal, postForm, postJson, projectUrl } from "./api.js";
import { $, busy, el, fail, isTyping, plural, toast } from "./dom.js";
import { move, QUARANTINE, undo } from "./changes.js";
import { PhotoGrid } from "./grid.js";
import { addPhotos, chosenFiles, droppedFiles } from "./uploads.js";
import { openPhoto } from "./viewer.js";
import { grabFrame, pause, startCamera } from "./webcam.js";
import { classNames, emit, on, refreshProject, state } from "./state.js";

const PAGE = 200;
const view = { className: null, finding: "", offset: 0, total: 0, shownProject: null, stopCamera: null, auditing: false };
let grid;

export function init() {
  grid = new PhotoGrid($("grid"), { onOpen: (image) => openPhoto(image), onChange: selectionChanged });
  on("project", projectChanged);
  on("data", () => visible() && loadImages(true));
  $("add-class").addEventListener("submit", addClass);
  $("file-input").addEventListener("change", (event) => chosen(event.target));
  $("folder-input").addEventListener("change", (event) => chosen(event.target));
  $("finding-filter").addEventListener("change", (event) => {
    view.finding = event.target.value;
    view.offset = 0;
    loadImages();
  });
  $("move-button").addEventListener("click", (event) => busy(event.target, () => moveSelection($("move-to").value)));
  $("quarantine-button").addEventListener("click", (event) => busy(event.target, () => moveSelection(QUARANTINE)));
  $("undo-button").addEventListener("click", (event) => busy(event.target, () => undo()));
  $("audit-button").addEventListener("click", startAudit);
  $("capture-open").addEventListener("click", openCamera);
  $("capture-close").addEventListener("click", closeCamera);
  $("capture-burst").addEventListener("click", (event) => busy(event.target, captureBurst));
  wireDrop($("dropzone"));
  document.addEventListener("keydown", shortcut);
}

export function show() {
  loadImages();
  loadAuditSummary();
}

export function hide() {
  closeCamera();
}

const visible = () => !$("view-data").hidden;

function projectChanged() {
  if (!state.project) return;
  const names = classNames();
  if (view.className !== null && !names.includes(view.className)) view.className = null;
  renderClasses();
  $("move-to").replaceChildren(...names.map((name) => el("option", { value: name, text: `Move to ${name}` })));
  if (visible() && state.project.name !== view.shownProject) show();
}

function renderClasses() {
  const item = (name, count, key) => {
    const pressed = view.className === name;
    return el("li", {},
      el("button", { type: "button", "aria-pressed": String(pressed), dataset: { class: name ?? "" }, onclick: () => pickClass(name) },
        el("span", { class: "key", text: key }),
        el("span", { class: "name", text: name ?? "All photos" }),
        el("span", { class: "count", text: String(count) })));
  };
  const classes = state.project.classes;
  $("class-list").replaceChildren(
    item(null, state.project.images, ""),
    ...classes.map((c, i) => item(c.name, c.count, i < 9 ? String(i + 1) : "")),
  );
  $("capture-target").textContent = view.className ? `Photos go to ${view.className}.` : "Choose a class on the left first.";
}

function pickClass(name) {
  view.className = name;
  view.offset = 0;
  renderClasses();
  loadImages();
}

async function addClass(event) {
  event.preventDefault();
  const name = $("class-name").value.trim();
  try {
    await postJson(projectUrl(state.project.name, "/classes"), { name });
    $("class-name").value = "";
    await refreshProject();
    pickClass(name);
  } catch (error) {
    fail(error);
  }
}

let latestListing = 0; // an answer to an older listing that arrives late is not shown

async function loadImages(keepPlace = false) {
  const listing = ++latestListing;
  const project = state.project.name;
  view.shownProject = project;
  const query = new URLSearchParams({ offset: view.offset, limit: PAGE });
  if (view.className) query.set("class", view.className);
  if (view.finding) query.set("finding", view.finding);
  try {
    const answer = await getJson(projectUrl(project, `/images?${query}`));
    if (listing !== latestListing) return;
    if (answer.total && view.offset >= answer.total) {
      view.offset = Math.max(0, answer.total - PAGE);
      return loadImages(keepPlace);
    }
    view.total = answer.total;
    grid.show(project, answer.images, keepPlace);
    renderPager();
    renderEmpty(answer.total);
  } catch (error) {
    fail(error);
  }
}

function renderEmpty(total) {
  const empty = $("data-empty");
  empty.hidden = total > 0;
  if (total > 0) return;
  const title = !state.project.classes.length
    ? "Start with the classes"
    : view.finding ? "No photo has this finding" : "No photos here yet";
  const text = !state.project.classes.length
    ? "Add a class on the left for each kind of thing to tell apart, or drop a folder of class sub-folders here."
    : view.finding ? "Pick “All images” above to see every photo."
      : "Drop photos or whole folders here, click “Add photos”, or capture a burst with the webcam. A folder's name becomes its class.";
  empty.replaceChildren(el("h2", { text: title }), el("p", { text }));
}

function renderPager() {
  const pages = Math.ceil(view.total / PAGE);
  const page = Math.floor(view.offset / PAGE);
  const go = (offset) => () => { view.offset = offset; loadImages(); };
  $("pager").replaceChildren(...(pages <= 1 ? [] : [
    el("button", { type: "button", class: "button secondary", text: "Previous", disabled: page === 0, onclick: go(view.offset - PAGE) }),
    el("span", { class: "muted", text: `Page ${page + 1} of ${pages} · ${plural(view.total, "photo")}` }),
    el("button", { type: "button", class: "button secondary", text: "Next", disabled: page + 1 >= pages, onclick: go(view.offset + PAGE) }),
  ]));
}

function selectionChanged(ids) {
  $("selection-count").textContent = ids.length ? `${ids.length} selected` : "Click a photo to select it";
  $("move-button").disabled = !ids.length;
  $("quarantine-button").disabled = !ids.length;
}

async function moveSelection(to) {
  const ids = grid.selectedIds();
  if (!ids.length) return;
  await move(ids, to);
}

async function chosen(input) {
  const files = chosenFiles(input);
  input.value = "";
  await addPhotos(files, view.className).catch(fail);
}

function wireDrop(zone) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = await droppedFiles(event.dataTransfer);
    await addPhotos(files, view.className).catch(fail);
  });
}

function shortcut(event) {
  if (!visible() || isTyping(event)) return;
  const ids = grid.selectedIds();
  const names = classNames();
  const key = event.key;
  let handled = true;
  if (key.startsWith("Arrow")) grid.step(key, event.shiftKey);
  else if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") undo().catch(fail);
  else if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "a") grid.selectAll();
  else if (/^[1-9]$/.test(key) && !event.ctrlKey && !event.metaKey && ids.length && names[Number(key) - 1]) {
    move(ids, names[Number(key) - 1]).catch(fail);
  } else if ((key === "Delete" || key === "Backspace") && ids.length) move(ids, QUARANTINE).catch(fail);
  else if (key === "Enter" && ids.length) openPhoto(grid.images[grid.firstSelectedIndex()]);
  else if (key === "Escape") grid.clear();
  else handled = false;
  if (handled) event.preventDefault();
}

async function startAudit(event) {
  const button = event.target;
  if (view.auditing) return;
  const job = await busy(button, () => postJson(projectUrl(state.project.name, "/audit"), {}));
  if (!job) return;
  view.auditing = true;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  $("audit-summary").textContent = "Auditing the photos: duplicates, leakage, unreadable files, likely wrong labels…";
  follow(job.id, async (message) => {
    if (message.type === "step" && message.steps) {
      $("audit-summary").textContent = `Auditing the photos… ${message.step} of ${message.steps}`;
    }
    if (!isFinal(message.type)) return;
    view.auditing = false;
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (message.type === "error") toast(`The audit failed: ${message.message}`, { error: true });
    await refreshProject().catch(fail);
    await loadAuditSummary();
    loadImages();
  });
}

async function loadAuditSummary() {
  const filter = $("finding-filter");
  try {
    const audit = await getJson(projectUrl(state.project.name, "/audit"));
    const counts = Object.entries(audit.findings || {}).filter(([, count]) => count > 0);
    filter.replaceChildren(el("option", { value: "", text: "All images" }),
      ...counts.map(([kind, count]) => el("option", { value: kind, text: `${kind} (${count})` })));
    filter.value = counts.some(([kind]) => kind === view.finding) ? view.finding : "";
    view.finding = filter.value;
    $("audit-summary").textContent = !audit.summary
      ? "Not audited yet: “Audit the data” finds duplicates, leakage, unreadable files and likely wrong labels."
      : counts.length ? `Audit: ${counts.map(([kind, count]) => `${count} ${kind}`).join(", ")}. Pick a finding above to see those photos.`
        : "Audit: nothing found.";
  } catch (error) {
    if (error.status !== 404) fail(error);
  }
}

async function openCamera() {
  $("capture-panel").hidden = false;
  try {
    view.stopCamera ||= await startCamera($("capture-video"));
  } catch (error) {
    $("capture-panel").hidden = true;
    fail(error);
  }
}

function closeCamera() {
  view.stopCamera?.();
  view.stopCamera = null;
  $("capture-panel").hidden = true;
}

async function captureBurst() {
  if (!view.className) throw new Error("Choose the class the webcam photos are of, on the left, then capture.");
  const count = Math.max(1, Math.min(100, Number($("capture-count").value) || 10));
  const files = [];
  for (let i = 0; i < count; i += 1) {
    const blob = await grabFrame($("capture-video"), 640, 0.9);
    files.push(new File([blob], `webcam-${Date.now()}-${i}.jpg`, { type: "image/jpeg" }));
    await pause(150);
  }
  const answer = await postForm(projectUrl(state.project.name, `/classes/${enc(view.className)}/images`), { files });
  toast(`Captured ${plural(answer.added.length, "photo")} into ${view.className}.`);
  await refreshProject();
  emit("data");
}
