"""Writing an audit: `audit.json`; `audit.html`, one page with thumbnails of every finding; and, when a model
looked for them, `label-issues.csv`, the suspected label errors for the user to mark and `imgclf fix` to apply."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from imgclf.audit.duplicates import DuplicateGroup
from imgclf.audit.inspection import AuditedFile
from imgclf.audit.labels import LabelIssue
from imgclf.audit.report import AuditReport
from imgclf.data.images import file_thumbnail_uri
from imgclf.files import atomic_write_text, write_csv, write_json

THUMBNAILS_PER_GROUP = 12
THUMBNAILS_PER_SECTION = 60
THUMBNAIL_SIZE = 160
LABEL_ISSUES_FILE = "label-issues.csv"
LABEL_ISSUES_COLUMNS = ("file", "given", "suggested", "score", "action")
"""The columns of `label-issues.csv`. `action` is `keep` as written; the user changes it to `relabel` (move the
file to the suggested class) or `remove`, and `imgclf fix label-issues.csv` does it."""


def write_audit(report: AuditReport, out_dir: str | Path) -> list[Path]:
    """Write `audit.json`, the self-contained `audit.html` and, when the report has a model, `label-issues.csv`
    into `out_dir`, atomically; returns their paths."""
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / "audit.json", out_dir / "audit.html"
    write_json(json_path, report.to_dict())
    atomic_write_text(html_path, render_html(report))
    if report.model is None:
        return [json_path, html_path]
    csv_path = out_dir / LABEL_ISSUES_FILE
    write_label_issues(csv_path, report.label_issues)
    return [json_path, html_path, csv_path]


def write_label_issues(path: str | Path, issues: Sequence[LabelIssue]) -> None:
    """Write `issues` as `LABEL_ISSUES_COLUMNS`, one row per file (its absolute path, so that `imgclf fix --data`
    finds it from any folder), every action `keep`."""
    rows = [
        (os.path.abspath(issue.file.path), issue.given, issue.suggested, f"{issue.score:.4f}", "keep")
        for issue in issues
    ]
    write_csv(path, LABEL_ISSUES_COLUMNS, rows)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; }
.group { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em; margin: 0.8em 0; }
.leakage { border-color: #c00; border-width: 2px; }
.tag { display: inline-block; padding: 0 0.5em; border-radius: 4px; background: #eee; margin-right: 0.4em; }
.tag.bad { background: #c00; color: #fff; }
figure { display: inline-block; margin: 0.3em; vertical-align: top; width: 170px; font-size: 0.8em; }
figure img { max-width: 160px; max-height: 160px; display: block; }
.missing { width: 160px; height: 60px; background: #eee; }
"""


def render_html(report: AuditReport) -> str:
    """The audit as one HTML page with no external references: thumbnails are embedded as data URIs."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>imgclf audit</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Dataset audit</h1>",
        f"<p>{len(report.files)} files in {len(report.splits)} splits, audited in {report.seconds:.1f} s.</p>",
    ]
    parts += [f"<p><strong>Warning:</strong> {e(message)}</p>" for message in report.warnings]
    parts.append("<h2>Problems</h2>" + _html_table(("problem", "count"), report.problems().items()))
    parts.append("<h2>Classes</h2>")
    for split in report.splits:
        rows = list(zip(split.class_names, split.class_counts))
        parts.append(f"<h3>{e(split.name)}: {e(split.root)}</h3>" + _html_table(("class", "images"), rows))
        if split.imbalance:
            parts.append(f"<p><strong>Imbalance:</strong> {e(split.imbalance)}</p>")
    stats = report.statistics()
    spread_rows = [
        (name, *(stats[name][key] for key in ("min", "median", "max")))
        for name in ("width", "height", "bytes")
        if stats[name] is not None
    ]
    parts.append("<h2>Images</h2>" + _html_table(("", "min", "median", "max"), spread_rows))
    parts.append(_html_table(("mode", "images"), stats["modes"].items()))
    parts.append(_html_table(("format", "images"), stats["formats"].items()))
    sections = (
        ("Unreadable files", ("file", "reason"), [(f.display_name(), f.facts.error) for f in report.unreadable]),
        (
            "Extension does not match the format",
            ("file", "format"),
            [(f.display_name(), f.facts.format) for f in report.mismatched],
        ),
        (
            f"Tiny images (short side under {report.min_size} px)",
            ("file", "width", "height"),
            [(f.display_name(), f.facts.width, f.facts.height) for f in report.tiny],
        ),
    )
    for title, header, rows in sections:
        if rows:
            parts.append(f"<h2>{e(title)}</h2>" + _html_table(header, rows))
    parts.append(f"<h2>Duplicate groups ({len(report.groups)})</h2>")
    parts += [_html_group(group) for group in report.groups]
    parts += _html_model_findings(report)
    parts.append(_html_files("Image quality", [(i.file, ", ".join(i.problems)) for i in report.quality_issues]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_model_findings(report: AuditReport) -> list[str]:
    """Label issues, outliers and embedding near-duplicate groups, or a line saying no model looked."""
    if report.model is None:
        return ["<p>Label issues, outliers and embedding near-duplicates were not looked for (no model).</p>"]
    issues = [
        (issue.file, f"{issue.given} → {issue.suggested} (score {issue.score:.3f})") for issue in report.label_issues
    ]
    groups = report.embedding_groups
    return [
        _html_files(f"Label issues (given → suggested, by {report.model})", issues),
        _html_files(
            "Outliers (far from every other picture)", [(o.file, f"score {o.score:.3f}") for o in report.outliers]
        ),
        f"<h2>Embedding near-duplicates (cosine similarity ≥ {report.similarity:.2f}) ({len(groups)})</h2>",
        *[_html_group(group) for group in groups],
    ]


def _html_files(title: str, entries: Sequence[tuple[AuditedFile, str]]) -> str:
    """A section of thumbnails, each captioned with its file and note; past `THUMBNAILS_PER_SECTION`, a list."""
    figures = "".join(_html_figure(file, note) for file, note in entries[:THUMBNAILS_PER_SECTION])
    rest = "".join(
        f"<li>{html.escape(f'{file.display_name()}: {note}')}</li>" for file, note in entries[THUMBNAILS_PER_SECTION:]
    )
    more = f"<p>and without thumbnails:</p><ul>{rest}</ul>" if rest else ""
    return f"<h2>{html.escape(title)} ({len(entries)})</h2><div>{figures}</div>{more}"


def _html_figure(file: AuditedFile, note: str) -> str:
    """The file's thumbnail captioned with its name and `note`, all escaped."""
    caption = html.escape(f"{file.display_name()} ({file.facts.width}×{file.facts.height})")
    uri = file_thumbnail_uri(file.path, THUMBNAIL_SIZE)
    picture = f'<img src="{uri}" alt="{caption}">' if uri else '<div class="missing">unreadable now</div>'
    note_line = f"<br><strong>{html.escape(note)}</strong>" if note else ""
    return f"<figure>{picture}<figcaption>{caption}{note_line}</figcaption></figure>"


def _html_table(header: Sequence[str], rows) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{cell}</td>' if isinstance(cell, int | float) else f"<td>{html.escape(str(cell))}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_group(group: DuplicateGroup) -> str:
    tags = [f'<span class="tag">{group.kind}</span>']
    if group.kind == "near":
        tags.append(f'<span class="tag">distance {group.distance}</span>')
    if group.kind == "embedding":
        tags.append(f'<span class="tag">cosine ≥ {group.similarity:.3f}</span>')
    if group.leakage:
        tags.append(f'<span class="tag bad">leakage: {html.escape(", ".join(group.splits))}</span>')
    if group.label_conflict:
        tags.append(f'<span class="tag bad">label conflict: {html.escape(", ".join(group.class_names))}</span>')
    figures = [_html_figure(file, "") for file in group.files[:THUMBNAILS_PER_GROUP]]
    rest = "".join(f"<li>{html.escape(file.display_name())}</li>" for file in group.files[THUMBNAILS_PER_GROUP:])
    more = f"<p>and without thumbnails:</p><ul>{rest}</ul>" if rest else ""
    if group.copies:
        listed = "".join(f"<li>{html.escape(name)}</li>" for name in group.copy_names())
        more += f"<p>identical copies (each also in its exact group):</p><ul>{listed}</ul>"
    css = "group leakage" if group.leakage else "group"
    return f'<div class="{css}"><p>{"".join(tags)}</p>{"".join(figures)}{more}</div>'
