"""What an audit found: each split's summary, and the report that counts problems and becomes `audit.json`."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgclf.audit.duplicates import DuplicateGroup
from imgclf.audit.embeddings import Outlier
from imgclf.audit.inspection import AuditedFile, extension_matches
from imgclf.audit.labels import LabelIssue
from imgclf.audit.options import DEFAULT_SIMILARITY, HASH_BITS
from imgclf.audit.quality import QualityIssue, find_quality_issues


@dataclass
class SplitSummary:
    """A split's folder, classes and counts, what its indexing passed over, and its imbalance warning."""

    name: str
    root: str
    class_names: list[str]
    class_counts: list[int]
    skipped_hidden: int
    skipped_not_image: int
    loose_files: int
    imbalance: str | None


@dataclass
class AuditReport:
    """Everything `audit_folders` found; `problems()` counts what `--fail-on` can name.

    `label_issues`, `outliers` and `embedding_groups` come from the backbone `model`'s features, and stay empty
    when the audit ran without one (`model` None).
    """

    splits: list[SplitSummary]
    files: list[AuditedFile]
    groups: list[DuplicateGroup]
    near_threshold: int
    min_size: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model: str | None = None
    similarity: float = DEFAULT_SIMILARITY
    label_issues: list[LabelIssue] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    embedding_groups: list[DuplicateGroup] = field(default_factory=list)

    @property
    def unreadable(self) -> list[AuditedFile]:
        """Files that could not be decoded; `facts.error` says why."""
        return [file for file in self.files if not file.readable]

    @property
    def mismatched(self) -> list[AuditedFile]:
        """Readable files whose extension names another format than the one inside (a PNG called .jpg)."""
        return [
            file for file in self.files if file.readable and not extension_matches(file.path, file.facts.format or "")
        ]

    @property
    def tiny(self) -> list[AuditedFile]:
        """Readable images whose short side is below `min_size` pixels."""
        return [
            file for file in self.files if file.readable and min(file.facts.width, file.facts.height) < self.min_size
        ]

    @property
    def quality_issues(self) -> list[QualityIssue]:
        """Readable images that are too dark, too bright, blurry, low in information, oddly shaped, or grey
        among colour pictures."""
        return find_quality_issues(self.files)

    def problems(self) -> dict[str, int]:
        """How many of each problem `--fail-on` can name: groups, files or splits.

        `leakage` and `duplicates` count exact and pHash groups; `near-duplicates` the embedding groups.
        """
        return {
            "leakage": sum(group.leakage for group in self.groups),
            "corrupt": len(self.unreadable),
            "duplicates": len(self.groups),
            "mismatch": len(self.mismatched),
            "tiny": len(self.tiny),
            "imbalance": sum(split.imbalance is not None for split in self.splits),
            "label-issues": len(self.label_issues),
            "outliers": len(self.outliers),
            "near-duplicates": len(self.embedding_groups),
            "quality": len(self.quality_issues),
        }

    def failures(self, fail_on: Sequence[str]) -> dict[str, int]:
        """The problems among `fail_on` that were found, with their counts."""
        found = self.problems()
        return {name: found[name] for name in fail_on if found[name]}

    def statistics(self, split: str | None = None) -> dict[str, object]:
        """Width, height and file size (min, median, max), and counts of modes and formats, of readable images."""
        facts = [f.facts for f in self.files if f.readable and (split is None or f.split == split)]
        return {
            "images": len(facts),
            "width": _spread([f.width for f in facts]),
            "height": _spread([f.height for f in facts]),
            "bytes": _spread([f.size_bytes for f in facts]),
            "modes": dict(Counter(f.mode for f in facts).most_common()),
            "formats": dict(Counter(f.format for f in facts).most_common()),
        }

    def to_dict(self) -> dict[str, object]:
        """The report as plain JSON-ready values (what `audit.json` holds)."""
        return {
            "settings": {
                "near_threshold": self.near_threshold,
                "min_size": self.min_size,
                "content_hash": "blake2b-128",
                "perceptual_hash": f"pHash {HASH_BITS} bits (imagehash), Hamming distance",
                "model": self.model,
                "similarity": self.similarity if self.model else None,
            },
            "seconds": round(self.seconds, 3),
            "problems": self.problems(),
            "warnings": self.warnings,
            "splits": {
                split.name: {**asdict(split), "statistics": self.statistics(split.name)} for split in self.splits
            },
            "statistics": self.statistics(),
            "corrupt": [{**_where(file), "reason": file.facts.error} for file in self.unreadable],
            "mismatched_extension": [
                {**_where(file), "extension": Path(file.path).suffix, "format": file.facts.format}
                for file in self.mismatched
            ],
            "tiny": [{**_where(file), "width": file.facts.width, "height": file.facts.height} for file in self.tiny],
            "duplicates": [_group_dict(group) for group in self.groups],
            "embedding_duplicates": [_group_dict(group) for group in self.embedding_groups],
            "label_issues": [
                {**_where(issue.file), "given": issue.given, "suggested": issue.suggested, "score": issue.score}
                for issue in self.label_issues
            ],
            "outliers": [{**_where(outlier.file), "score": outlier.score} for outlier in self.outliers],
            "quality": [
                {**_where(issue.file), "problems": issue.problems, **asdict(issue.file.facts.looks)}
                for issue in self.quality_issues
            ],
        }


def _group_dict(group: DuplicateGroup) -> dict[str, object]:
    return {
        "kind": group.kind,
        **({"similarity": group.similarity} if group.kind == "embedding" else {"distance": group.distance}),
        "leakage": group.leakage,
        "label_conflict": group.label_conflict,
        "splits": group.splits,
        "classes": group.class_names,
        "files": [_group_member(file) for file in group.files],
        "copies": [_group_member(file) for file in group.copies],
    }


def _where(file: AuditedFile) -> dict[str, str]:
    return {"path": file.path, "split": file.split, "class": file.class_name}


def _group_member(file: AuditedFile) -> dict[str, object]:
    return {
        **_where(file),
        "content_hash": file.facts.content_hash,
        "width": file.facts.width,
        "height": file.facts.height,
    }


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
