"""Duplicate pictures: exact groups by content hash, near groups by perceptual hashes within a Hamming distance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from imgclf.audit.inspection import AuditedFile
from imgclf.data.groups import connected_groups, hamming_pairs


@dataclass
class DuplicateGroup:
    """Files holding the same picture: `exact` (identical bytes), `near` (perceptual hashes within the threshold) or
    `embedding` (backbone features whose cosine similarity reaches the threshold, joined where pHash did not).

    A near or embedding group joins at least two different contents and lists each once in `files`, by its first
    file, so no two of its files are identical. The other files with the same bytes as one of them (an exact group
    of their own) are its `copies`: they count in its splits and classes, since a near-duplicate of a copy that
    sits in another split leaks too. `distance` is the largest Hamming distance between two of its perceptual hashes (0
    for an exact group); `similarity`, of an embedding group only, the lowest cosine similarity of two of its files.
    """

    kind: str
    files: list[AuditedFile]
    distance: int = 0
    copies: list[AuditedFile] = field(default_factory=list)
    similarity: float | None = None

    @property
    def splits(self) -> list[str]:
        """The sorted names of the splits the group's files and copies sit in."""
        return sorted({file.split for file in self.files + self.copies})

    @property
    def class_names(self) -> list[str]:
        """The sorted names of the classes the group's files and copies sit in."""
        return sorted({file.class_name for file in self.files + self.copies})

    @property
    def leakage(self) -> bool:
        """The picture sits in more than one split, so a model is scored on what it trained on."""
        return len(self.splits) > 1

    @property
    def label_conflict(self) -> bool:
        """The picture sits in more than one class."""
        return len(self.class_names) > 1

    def names(self) -> list[str]:
        """Each file as `split: class/file`, then the copies as `copy_names` gives them."""
        return [file.display_name() for file in self.files] + self.copy_names()

    def copy_names(self) -> list[str]:
        """Each copy as `split: class/file (identical to split: class/file)`, naming the file it repeats."""
        by_content = {file.facts.content_hash: file for file in self.files}
        return [
            f"{copy.display_name()} (identical to {by_content[copy.facts.content_hash].display_name()})"
            for copy in self.copies
        ]


def find_duplicates(files: Sequence[AuditedFile], near_threshold: int) -> list[DuplicateGroup]:
    """Exact groups (same content hash) and near groups (pHash within `near_threshold` bits) of readable images.

    Identical copies count once when looking for near-duplicates: a near group lists the first file of each
    content and keeps the others as its `copies`, so an exact pair is never also a near pair.
    Groups come leakage first, then label conflicts, then larger groups.
    """
    by_content: dict[str, list[AuditedFile]] = defaultdict(list)
    for file in files:
        if file.readable:
            by_content[file.facts.content_hash].append(file)
    contents = list(by_content.values())
    groups = [DuplicateGroup("exact", copies) for copies in contents if len(copies) > 1]
    hashes = np.array([copies[0].facts.perceptual_hash for copies in contents], dtype=np.uint64)
    for members in connected_groups(len(contents), *hamming_pairs(hashes, near_threshold)):
        member_hashes = hashes[members]
        distance = int(np.bitwise_count(member_hashes[:, None] ^ member_hashes[None, :]).max())
        firsts = [contents[member][0] for member in members]
        copies = [file for member in members for file in contents[member][1:]]
        groups.append(DuplicateGroup("near", firsts, distance, copies))
    return sorted(groups, key=group_order)


def group_order(group: DuplicateGroup) -> tuple:
    """Sort key: leakage first, then label conflicts, then larger groups."""
    return (not group.leakage, not group.label_conflict, -len(group.files), group.kind, group.files[0].path)
