// Changes to a project's photos: move to a class or to quarantine, and undo. Views listen for "data".

import { postJson, projectUrl } from "./api.js";
import { plural, toast } from "./dom.js";
import { emit, refreshProject, state } from "./state.js";

export const QUARANTINE = "quarantine";

/** Move the photos `ids` to class `to` (or QUARANTINE); a toast offers to undo it. */
export async function move(ids, to) {
  const result = await postJson(projectUrl(state.project.name, "/moves"), { images: ids, to });
  const where = to === QUARANTINE ? "to quarantine" : `to ${to}`;
  toast(`Moved ${plural(result.moved.length, "photo")} ${where}.`, {
    action: { label: "Undo", run: () => undo(result.journal).catch((error) => toast(error.message, { error: true })) },
  });
  await changed();
  return result;
}

/** Undo the change `journal`, or the last change when none is given. */
export async function undo(journal = null) {
  const result = await postJson(projectUrl(state.project.name, "/undo"), journal ? { journal } : {});
  toast(`Undone: ${plural(result.restored.length, "photo")} back where ${result.restored.length === 1 ? "it was" : "they were"}.`);
  await changed();
  return result;
}

async function changed() {
  await refreshProject();
  emit("data");
}
