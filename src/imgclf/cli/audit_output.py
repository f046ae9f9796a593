"""What `imgclf audit` prints: class counts, image sizes, problem counts and the files behind them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from imgclf.cli.output import stdout
from imgclf.training.progress import stderr

if TYPE_CHECKING:  # the type only: the audit's modules import numpy and Pillow
    from imgclf.audit.report import AuditReport

AUDIT_ROWS_SHOWN = 10


def print_audit(report: AuditReport) -> None:
    """The audit's terminal summary: classes per split, image sizes, problem counts, then the first of each."""
    _print_class_counts(report)
    for message in [*report.warnings, *(split.imbalance for split in report.splits if split.imbalance)]:
        stderr.print(f"[yellow]warning:[/yellow] {escape(message)}")
    _print_image_sizes(report)
    _print_problem_counts(report)
    _print_problem_files(report)


def _print_class_counts(report: AuditReport) -> None:
    classes = Table(title=f"Images per class ({report.seconds:.1f} s)")
    classes.add_column("class")
    for split in report.splits:
        classes.add_column(escape(split.name), justify="right")
    for name in dict.fromkeys(name for split in report.splits for name in split.class_names):
        counts = [dict(zip(split.class_names, split.class_counts)).get(name) for split in report.splits]
        classes.add_row(escape(name), *["-" if count is None else str(count) for count in counts])
    classes.add_row("total", *[str(sum(split.class_counts)) for split in report.splits], style="bold")
    stdout.print(classes)


def _print_image_sizes(report: AuditReport) -> None:
    stats = report.statistics()
    sizes = Table(title=f"{stats['images']} readable images")
    for column in ("", "min", "median", "max"):
        sizes.add_column(column, justify="right" if column else "left")
    for name in ("width", "height", "bytes"):
        if stats[name] is not None:
            sizes.add_row(name, *[f"{stats[name][key]:,.0f}" for key in ("min", "median", "max")])
    stdout.print(sizes)
    for name in ("modes", "formats"):
        stdout.print(f"{name}: " + ", ".join(f"{escape(str(key))} {count}" for key, count in stats[name].items()))


def _print_problem_counts(report: AuditReport) -> None:
    groups = report.groups
    problems = Table(title="Problems")
    problems.add_column("problem")
    problems.add_column("count", justify="right")
    problems.add_column("--fail-on")
    for label, count, name in (
        ("unreadable files", len(report.unreadable), "corrupt"),
        ("extension does not match the format", len(report.mismatched), "mismatch"),
        (f"tiny images (short side under {report.min_size} px)", len(report.tiny), "tiny"),
        ("imbalanced splits", report.problems()["imbalance"], "imbalance"),
        ("exact duplicate groups", sum(g.kind == "exact" for g in groups), "duplicates"),
        (
            f"near-duplicate groups (pHash within {report.near_threshold} bits)",
            sum(g.kind == "near" for g in groups),
            "duplicates",
        ),
        ("duplicate groups across splits", sum(g.leakage for g in groups), "leakage"),
        ("duplicate groups across classes", sum(g.label_conflict for g in groups), ""),
        ("image quality (dark, bright, blurry, ...)", len(report.quality_issues), "quality"),
        *_model_problem_rows(report),
    ):
        problems.add_row(label, f"[red]{count}[/red]" if count else "0", name)
    stdout.print(problems)


def _print_problem_files(report: AuditReport) -> None:
    _print_some("Unreadable files", ("file", "reason"), [(f.display_name(), f.facts.error) for f in report.unreadable])
    _print_some(
        "Extension does not match the format",
        ("file", "format"),
        [(f.display_name(), f.facts.format) for f in report.mismatched],
    )
    _print_some(
        "Tiny images",
        ("file", "width × height"),
        [(f.display_name(), f"{f.facts.width} × {f.facts.height}") for f in report.tiny],
    )
    _print_some(
        "Duplicate groups",
        ("kind", "where", "files"),
        [
            (
                group.kind if group.kind == "exact" else f"near ({group.distance} bits)",
                ("[red]across splits[/red]" if group.leakage else f"within {group.splits[0]}")
                + (" [red]and classes[/red]" if group.label_conflict else ""),
                "\n".join(escape(name) for name in group.names()),
            )
            for group in report.groups
        ],
        markup=True,
    )
    _print_findings(report)


def _model_problem_rows(report: AuditReport) -> list[tuple[str, int, str]]:
    """The Problems table's rows for what the backbone's features found; none when no model looked."""
    if report.model is None:
        return []
    return [
        (f"suspected label errors ({report.model})", len(report.label_issues), "label-issues"),
        ("outliers (far from every other picture)", len(report.outliers), "outliers"),
        (
            f"embedding near-duplicate groups (cosine ≥ {report.similarity:.2f})",
            len(report.embedding_groups),
            "near-duplicates",
        ),
    ]


def _print_findings(report: AuditReport) -> None:
    """The first label issues, outliers, embedding near-duplicate groups and quality flags."""
    _print_some(
        "Suspected label errors (given → suggested)",
        ("file", "given", "suggested", "score"),
        [(i.file.display_name(), i.given, i.suggested, f"{i.score:.3f}") for i in report.label_issues],
    )
    _print_some("Outliers", ("file", "score"), [(o.file.display_name(), f"{o.score:.3f}") for o in report.outliers])
    _print_some(
        "Embedding near-duplicate groups",
        ("where", "cosine", "files"),
        [
            (
                ("[red]across splits[/red]" if group.leakage else f"within {group.splits[0]}")
                + (" [red]and classes[/red]" if group.label_conflict else ""),
                f"≥ {group.similarity:.3f}",
                "\n".join(escape(name) for name in group.names()),
            )
            for group in report.embedding_groups
        ],
        markup=True,
    )
    _print_some(
        "Image quality",
        ("file", "problems"),
        [(issue.file.display_name(), ", ".join(issue.problems)) for issue in report.quality_issues],
    )


def _print_some(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], markup: bool = False) -> None:
    """A table of the first `AUDIT_ROWS_SHOWN` rows, saying how many more audit.json holds; nothing when empty."""
    if not rows:
        return
    table = Table(title=title)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows[:AUDIT_ROWS_SHOWN]:
        table.add_row(*(cell if markup else escape(str(cell)) for cell in row))
    stdout.print(table)
    if len(rows) > AUDIT_ROWS_SHOWN:
        stdout.print(f"… and {len(rows) - AUDIT_ROWS_SHOWN} more in audit.json")
