// The studio's JSON API (see /openapi.json), always on the page's own origin.

const BASE = "api/";

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export const enc = encodeURIComponent;

/** An image id ("CLASS/sub/name.jpg") as URL path segments. */
export const imagePath = (id) => id.split("/").map(enc).join("/");

export const projectUrl = (project, rest = "") => `projects/${enc(project)}${rest}`;

export const runUrl = (project, run, rest = "") => projectUrl(project, `/runs/${enc(run)}${rest}`);

/** The absolute URL of an API path, e.g. for <img src> and download links. */
export const url = (path) => BASE + path;

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(BASE + path, options);
  } catch (error) {
    throw new ApiError(`The studio could not be reached (${error.message}). Is imgclf studio still running?`, 0);
  }
  if (!response.ok) throw new ApiError(await explain(response), response.status);
  return response;
}

async function explain(response) {
  try {
    const body = await response.json();
    if (typeof body.error === "string") return body.error;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((item) => item.msg).join("; ");
  } catch {
    // not JSON: fall through to the status line
  }
  return `The studio answered ${response.status} ${response.statusText}.`;
}

export const getJson = async (path) => (await request(path)).json();

export async function postJson(path, body = {}) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** POST multipart `fields` ({name: value or [values]}); `as` = "json" or "blob". */
export async function postForm(path, fields, as = "json") {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    for (const item of Array.isArray(value) ? value : [value]) form.append(name, item, item.name || "photo.jpg");
  }
  const response = await request(path, { method: "POST", body: form });
  return as === "blob" ? response.blob() : response.json();
}

export async function postJsonForBlob(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.blob();
}

const FINAL = new Set(["done", "error", "cancelled"]);

/** Follow a job's server-sent events; `onEvent(event)` for each. Returns a function that stops following. */
export function follow(jobId, onEvent) {
  const source = new EventSource(url(`jobs/${enc(jobId)}/events`));
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (FINAL.has(event.type)) source.close();
    onEvent(event);
  };
  return () => source.close();
}

export const isFinal = (type) => FINAL.has(type);
