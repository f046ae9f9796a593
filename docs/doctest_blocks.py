"""A griffe extension for the API reference: docstrings' `>>>` examples become Python console code blocks.

imgclf's docstrings keep examples as plain doctest lines, as `help()` shows them; Markdown alone would read
each `>>>` line as a nested quote. Loaded by mkdocs.yml (mkdocstrings' `extensions`).
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_examples(text: str) -> str:
    """`text` with each run of `>>>` lines, and the output lines right after them, inside a ```pycon fence.

    >>> print(fence_examples("Add one.\\n\\n>>> 1 + 1\\n2"))
    Add one.
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    """
    lines, in_example = [], False
    for line in text.splitlines():
        starts = line.startswith(">>>")
        if starts and not in_example:
            lines.append("```pycon")
            in_example = True
        elif in_example and not starts and not line.strip():
            lines.append("```")
            in_example = False
        lines.append(line)
    if in_example:
        lines.append("```")
    return "\n".join(lines)


class DoctestBlocks(griffe.Extension):
    """Fence the doctest examples of every object's docstring before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_examples(obj.docstring.value)
