// Thumbnail grids: a page of photos at a time (the DOM never holds thousands), thumbnails loaded lazily, a
// selection moved with the mouse or the arrow keys.

import { imagePath, projectUrl, url } from "./api.js";
import { el } from "./dom.js";

/** A photo tile: its thumbnail, name and badges; `caption` replaces the file name. */
export function tile(project, image, { caption = null, badges = [] } = {}) {
  // A run's photo outside the class folders (id null) has no thumbnail: its name stands in for it.
  const picture = image.id
    ? el("img", { src: url(projectUrl(project, `/thumbnails/${imagePath(image.id)}`)), alt: image.name || image.id, loading: "lazy", decoding: "async", draggable: "false" })
    : el("div", { class: "no-thumbnail", title: image.file, text: image.name });
  return el("figure", { class: "tile", role: "option", tabindex: "-1", "aria-selected": "false", dataset: { id: image.id }, title: image.id ?? image.file },
    picture,
    el("figcaption", { text: caption ?? image.name ?? image.id }),
    badges.length ? el("div", { class: "badges" }, badges) : null);
}

/** Badges for an image's audit findings. */
function findingBadges(findings = []) {
  return findings.map((finding) => el("span", {
    class: `badge ${finding.kind}`,
    text: finding.kind,
    title: finding.suggested ? `${finding.detail} (suggested class: ${finding.suggested})` : finding.detail,
  }));
}

/** The Data view's grid: one page of tiles and which of them are selected. */
export class PhotoGrid {
  constructor(container, { onOpen, onChange }) {
    this.container = container;
    this.onOpen = onOpen;
    this.onChange = onChange;
    this.images = [];
    this.selected = new Set();
    this.anchor = 0;
    container.addEventListener("click", (event) => this.click(event));
    container.addEventListener("dblclick", (event) => {
      const figure = event.target.closest(".tile");
      if (figure) this.onOpen(this.images[this.indexOf(figure.dataset.id)]);
    });
  }

  /** Show `images`, keeping the selected photos that are still among them; with `keepPlace`, when none is (they
   * were just moved), the photo now at the first selected one's place is selected. */
  show(project, images, keepPlace = false) {
    const place = this.firstSelectedIndex();
    const kept = images.filter((image) => this.selected.has(image.id)).map((image) => image.id);
    this.images = images;
    this.container.replaceChildren(...images.map((image) => tile(project, image, { badges: findingBadges(image.findings) })));
    this.selected = new Set(kept);
    if (!kept.length && keepPlace && place >= 0 && images.length) this.select(Math.min(place, images.length - 1));
    else this.changed();
  }

  indexOf(id) {
    return this.images.findIndex((image) => image.id === id);
  }

  selectedIds() {
    return this.images.filter((image) => this.selected.has(image.id)).map((image) => image.id);
  }

  firstSelectedIndex() {
    return this.images.findIndex((image) => this.selected.has(image.id));
  }

  click(event) {
    const figure = event.target.closest(".tile");
    if (!figure) return;
    const index = this.indexOf(figure.dataset.id);
    if (event.shiftKey) this.extendTo(index);
    else if (event.ctrlKey || event.metaKey) this.toggle(index);
    else this.select(index);
  }

  select(index) {
    this.selected = new Set([this.images[index].id]);
    this.anchor = index;
    this.changed(index);
  }

  toggle(index) {
    const id = this.images[index].id;
    if (this.selected.has(id)) this.selected.delete(id);
    else this.selected.add(id);
    this.anchor = index;
    this.changed(index);
  }

  extendTo(index) {
    const [from, to] = [Math.min(this.anchor, index), Math.max(this.anchor, index)];
    this.selected = new Set(this.images.slice(from, to + 1).map((image) => image.id));
    this.changed(index);
  }

  selectAll() {
    this.selected = new Set(this.images.map((image) => image.id));
    this.changed();
  }

  clear() {
    this.selected.clear();
    this.changed();
  }

  /** Move the selection by arrow key; `extend` (Shift) grows it instead. */
  step(key, extend) {
    if (!this.images.length) return;
    const columns = this.columns();
    const delta = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns }[key];
    const current = this.focusIndex ?? Math.max(0, this.firstSelectedIndex());
    const next = Math.max(0, Math.min(this.images.length - 1, current + delta));
    if (extend) this.extendTo(next);
    else this.select(next);
  }

  columns() {
    const tiles = [...this.container.children];
    if (tiles.length < 2) return 1;
    const top = tiles[0].offsetTop;
    const count = tiles.findIndex((figure) => figure.offsetTop !== top);
    return count === -1 ? tiles.length : count;
  }

  changed(focusIndex = null) {
    this.focusIndex = focusIndex;
    for (const figure of this.container.children) {
      figure.setAttribute("aria-selected", String(this.selected.has(figure.dataset.id)));
    }
    if (focusIndex !== null) {
      const figure = this.container.children[focusIndex];
      figure.focus({ preventScroll: true });
      figure.scrollIntoView({ block: "nearest" });
    }
    this.onChange(this.selectedIds());
  }
}
