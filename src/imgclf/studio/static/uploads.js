// Adding photos: files and whole folders from drops or the file choosers, sent in small batches with progress.

import { enc, postForm, postJson, projectUrl } from "./api.js";
import { $, plural, toast } from "./dom.js";
import { emit, refreshProject, state } from "./state.js";

const BATCH = 16;

/** [{file, path}] of everything dropped: files and the files inside dropped folders (all levels). */
export async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files].map((file) => ({ file, path: file.name }));
  const found = [];
  for (const entry of entries) await walk(entry, found);
  return found;
}

async function walk(entry, found) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push({ file, path: entry.fullPath.replace(/^\//, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) if (!child.name.startsWith(".")) await walk(child, found);
    }
  }
}

/** [{file, path}] of a file chooser's selection (folders keep their relative paths). */
export function chosenFiles(input) {
  return [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

/** Which class each file goes to: a loose file to `fallback`; a file in a folder to that folder's name; a file
 *  in a folder of folders (a data folder, e.g. training_set/cars/x.jpg) to its sub-folder's name. */
function byClass(files, fallback) {
  const groups = new Map();
  const loose = [];
  for (const { file, path } of files) {
    const parts = path.split("/");
    const name = parts.length >= 3 ? parts[1] : parts.length === 2 ? parts[0] : fallback;
    if (!name) loose.push(file);
    else groups.set(name, [...(groups.get(name) || []), file]);
  }
  return { groups, loose };
}

/** Upload `files` ([{file, path}]) into their classes (made when missing), showing progress. */
export async function addPhotos(files, fallbackClass) {
  const { groups, loose } = byClass(files.filter(({ file }) => !file.name.startsWith(".")), fallbackClass);
  if (loose.length) {
    toast(`Choose a class on the left first, or drop a folder named after its class: ${plural(loose.length, "photo")} not added.`, { error: true });
  }
  const total = [...groups.values()].reduce((sum, group) => sum + group.length, 0);
  if (!total) return;
  const project = state.project.name;
  const known = new Set(state.project.classes.map((c) => c.name));
  let done = 0;
  let added = 0;
  const skipped = [];
  progress(0, total);
  try {
    for (const [className, group] of groups) {
      if (!known.has(className)) await postJson(projectUrl(project, "/classes"), { name: className });
      for (let start = 0; start < group.length; start += BATCH) {
        const batch = group.slice(start, start + BATCH);
        const answer = await postForm(projectUrl(project, `/classes/${enc(className)}/images`), { files: batch });
        added += answer.added.length;
        skipped.push(...answer.skipped);
        done += batch.length;
        progress(done, total);
      }
    }
  } finally {
    $("upload-status").hidden = true;
    await refreshProject();
    emit("data");
  }
  report(added, skipped);
}

function progress(done, total) {
  $("upload-status").hidden = false;
  $("upload-progress").value = total ? done / total : 0;
  $("upload-text").textContent = `Adding photos: ${done} of ${total}`;
}

function report(added, skipped) {
  toast(`Added ${plural(added, "photo")}.`);
  if (skipped.length) {
    const first = skipped.slice(0, 3).map((s) => `${s.file}: ${s.reason}`).join("; ");
    toast(`${plural(skipped.length, "file")} skipped. ${first}${skipped.length > 3 ? " …" : ""}`, { error: true, seconds: 10 });
  }
}
