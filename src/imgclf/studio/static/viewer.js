// One photo in a window: the original, the chosen run's Grad-CAM beside it, and buttons to move it.

import { imagePath, postJsonForBlob, projectUrl, runUrl, url } from "./api.js";
import { $, busy, el, fail, openDialog } from "./dom.js";
import { move, QUARANTINE } from "./changes.js";
import { classNames, state } from "./state.js";

let overlayUrl = null;

/** Show photo `image` ({id, class?, name?}); `caption` says more (e.g. the prediction). */
export function openPhoto(image, caption = "") {
  const project = state.project.name;
  const currentClass = image.class || image.true || image.id.split("/")[0];
  $("viewer-title").textContent = image.name || image.id.split("/").at(-1);
  $("viewer-image").src = url(projectUrl(project, `/files/${imagePath(image.id)}`));
  $("viewer-image").alt = image.id;
  $("viewer-caption").textContent = caption || `Class: ${currentClass}`;
  $("viewer-explained").hidden = true;
  $("viewer-status").textContent = "";
  $("viewer-actions").replaceChildren(...actions(image, currentClass));
  openDialog($("viewer"));
  if (state.run) explainPhoto(image.id);
  else $("viewer-status").textContent = "Train a model to see where it looks (Grad-CAM).";
}

function actions(image, currentClass) {
  const moveTo = (target) => async (event) => {
    const ok = await busy(event.target, () => move([image.id], target));
    if (ok) $("viewer").close();
  };
  return [
    ...classNames()
      .filter((name) => name !== currentClass)
      .map((name) => el("button", { type: "button", class: "button secondary", dataset: { moveTo: name }, text: `Move to ${name}`, onclick: moveTo(name) })),
    el("button", { type: "button", class: "button danger", text: "Quarantine", onclick: moveTo(QUARANTINE) }),
  ];
}

async function explainPhoto(id) {
  const run = state.run;
  $("viewer-status").textContent = `Asking ${run} where it looks…`;
  try {
    const blob = await postJsonForBlob(runUrl(state.project.name, run, "/explain"), { image: id });
    if ($("viewer-image").alt !== id) return; // another photo was opened meanwhile
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = URL.createObjectURL(blob);
    $("viewer-gradcam").src = overlayUrl;
    $("viewer-explained").hidden = false;
    $("viewer-status").textContent = `Grad-CAM of ${run}.`;
  } catch (error) {
    $("viewer-status").textContent = "";
    fail(error);
  }
}
