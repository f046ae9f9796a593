// Small DOM helpers. Text from users (project, class and file names) only ever reaches the page as text nodes or
// attribute values, never as markup.

export const $ = (id) => document.getElementById(id);

/** An element with `props` (class, dataset, on<event> handlers, attributes) and children (nodes or text). */
export function el(tag, props = {}, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, as `el`. */
export function svg(tag, props = {}, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), props, children);
}

function build(node, props, children) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

/** Show `message` for a few seconds; `action` = {label, run} adds a button (e.g. Undo). */
export function toast(message, { error = false, action = null, seconds = 6 } = {}) {
  const item = el("div", { class: error ? "toast error" : "toast", role: error ? "alert" : "status" }, el("span", { text: message }));
  if (action) {
    item.append(el("button", { type: "button", text: action.label, onclick: () => { item.remove(); action.run(); } }));
  }
  $("toasts").append(item);
  setTimeout(() => item.remove(), (error ? 2 : 1) * seconds * 1000);
  return item;
}

/** Report a failed action: the server's one-line explanation. */
export function fail(error) {
  console.warn(error);
  toast(error.message || String(error), { error: true });
}

/** Run `work` with `button` disabled and spinning; errors become a toast. Returns work's result or undefined. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } catch (error) {
    fail(error);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function percent(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(Number(value)) ? "–" : `${(100 * value).toFixed(digits)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** Probability bars, most probable first: a list of <li> for an <ol class="bars">. */
export function bars(probabilities, top, limit = 5) {
  return Object.entries(probabilities)
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([name, p]) =>
      el("li", { class: name === top ? "top" : "", dataset: { class: name } },
        el("span", { text: name }),
        el("span", { class: "track" }, el("span", { class: "fill", style: `width: ${(100 * p).toFixed(2)}%` })),
        el("span", { class: "percent", text: percent(p) })));
}

/** Show the view `name`'s empty state (`#NAME-empty`: `title`, `text` and a link to Train) instead of its content
 *  (`#NAME-content`) when `empty`; returns `empty`. */
export function emptyUntilTrained(name, empty, title, text) {
  $(`${name}-empty`).hidden = !empty;
  $(`${name}-content`).hidden = empty;
  if (empty) {
    $(`${name}-empty`).replaceChildren(el("h2", { text: title }), el("p", { text }),
      el("a", { class: "button", href: "#train", text: "Go to Train" }));
  }
  return empty;
}

/** Whether a key press belongs to a text field or an open window rather than to the page's shortcuts. */
export function isTyping(event) {
  const target = event.target;
  const field = target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
  return field || document.querySelector("dialog[open]") !== null;
}

/** Open a <dialog>; its [data-close] buttons close it. */
export function openDialog(dialog) {
  if (!dialog.open) dialog.showModal();
}

document.addEventListener("click", (event) => {
  const closer = event.target.closest("[data-close]");
  if (closer) closer.closest("dialog").close();
});
