// Line charts in SVG: training curves, run comparisons, calibration and coverage.

import { svg } from "./dom.js";

export const COLOURS = ["#2f6fde", "#e8710a", "#1b8a3a", "#c62828", "#7a4cc2", "#00838f", "#ad1457", "#5d4037"];
const WIDTH = 480;
const HEIGHT = 220;
const MARGIN = { left: 44, right: 12, top: 12, bottom: 40 };

/** Draw `series` ([{name, points: [[x, y]], colour, dashed}]) into the <svg> `target`, replacing what was there.
 *  `options`: xMin/xMax/yMin/yMax (fitted to the data when missing), xLabel, percent (y as %), xPercent (x as %,
 *  else whole numbers such as epochs), marker ([x, y]). */
export function lineChart(target, series, options = {}) {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y);
  const box = {
    xMin: options.xMin ?? Math.min(...xs, 1),
    xMax: options.xMax ?? Math.max(...xs, 2),
    yMin: options.yMin ?? Math.min(...ys, 0),
    yMax: options.yMax ?? niceStep(Math.max(...ys, 0.1) / 4) * 4,
  };
  const x = (value) => MARGIN.left + ((value - box.xMin) / (box.xMax - box.xMin || 1)) * (WIDTH - MARGIN.left - MARGIN.right);
  const y = (value) => HEIGHT - MARGIN.bottom - ((value - box.yMin) / (box.yMax - box.yMin || 1)) * (HEIGHT - MARGIN.top - MARGIN.bottom);
  target.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  target.setAttribute("role", "img");
  target.replaceChildren(...axes(box, x, y, options), ...series.map((s, i) => line(s, i, x, y)), legend(series));
  if (options.marker) {
    const [mx, my] = options.marker;
    target.append(svg("circle", { cx: x(mx), cy: y(my), r: 6, fill: "none", stroke: "currentColor", "stroke-width": 2, class: "marker" }));
  }
}

/** The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`: round tick steps. */
function niceStep(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((factor) => factor * power).find((step) => step >= value);
}

function ticks(min, max, count) {
  return Array.from({ length: count + 1 }, (_, i) => min + ((max - min) * i) / count);
}

function axes(box, x, y, options) {
  const label = (value) => (options.percent ? `${Math.round(100 * value)}%` : +value.toFixed(2));
  const parts = [];
  for (const value of ticks(box.yMin, box.yMax, 4)) {
    parts.push(svg("line", { class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
    parts.push(svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, String(label(value))));
  }
  const xTicks = options.xPercent ? ticks(box.xMin, box.xMax, 5) : integerTicks(box.xMin, box.xMax);
  for (const value of xTicks) {
    const text = options.xPercent ? `${Math.round(100 * value)}%` : String(+value.toFixed(2));
    parts.push(svg("text", { x: x(value), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, text));
  }
  if (options.xLabel) {
    parts.push(svg("text", { x: (MARGIN.left + WIDTH - MARGIN.right) / 2, y: HEIGHT - 18, "text-anchor": "middle" }, options.xLabel));
  }
  return parts;
}

function integerTicks(min, max) {
  const step = Math.max(1, Math.ceil((max - min) / 8));
  const values = [];
  for (let value = Math.ceil(min); value <= max; value += step) values.push(value);
  return values;
}

function line(series, index, x, y) {
  const colour = series.colour || COLOURS[index % COLOURS.length];
  const points = series.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py));
  const group = svg("g", { class: "series-group", dataset: { series: series.name } });
  group.append(svg("polyline", {
    class: "series",
    stroke: colour,
    "stroke-dasharray": series.dashed ? "5 4" : null,
    points: points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" "),
  }));
  for (const [px, py] of points) {
    group.append(svg("circle", { class: "point", cx: x(px), cy: y(py), r: 3, fill: colour },
      svg("title", {}, `${series.name}: ${+py.toFixed(4)} at ${+px.toFixed(2)}`)));
  }
  return group;
}

function legend(series) {
  const group = svg("g", { class: "legend" });
  let left = MARGIN.left;
  series.forEach((s, i) => {
    const colour = s.colour || COLOURS[i % COLOURS.length];
    group.append(svg("rect", { x: left, y: HEIGHT - 12, width: 12, height: 3, fill: colour }));
    group.append(svg("text", { x: left + 16, y: HEIGHT - 8 }, s.name));
    left += 26 + 7 * s.name.length;
  });
  return group;
}

/** A history row's value as a number (history.csv rows may arrive as text); NaN when missing. */
export function number(value) {
  return value === "" || value === null || value === undefined ? NaN : Number(value);
}

/** Loss and accuracy charts of a run's history rows (train solid, validation dashed). */
export function drawHistory(lossTarget, accuracyTarget, history) {
  const points = (key) => history.map((row) => [number(row.epoch), number(row[key])]);
  const xMax = Math.max(2, ...history.map((row) => number(row.epoch)).filter(Number.isFinite));
  lineChart(lossTarget, [
    { name: "train loss", points: points("loss"), colour: COLOURS[0] },
    { name: "val loss", points: points("val_loss"), colour: COLOURS[1], dashed: true },
  ], { xLabel: "epoch", xMin: 1, xMax });
  lineChart(accuracyTarget, [
    { name: "train accuracy", points: points("accuracy"), colour: COLOURS[0] },
    { name: "val accuracy", points: points("val_accuracy"), colour: COLOURS[1], dashed: true },
  ], { xLabel: "epoch", xMin: 1, xMax, yMin: 0, yMax: 1, percent: true });
}
