"""Suspected label errors: out-of-fold class probabilities from the backbone's features, ranked by cleanlab.

Every labelled picture of every split is predicted by heads that never saw it (stratified k-fold, k = 5, fewer
for a class with fewer pictures): a logistic regression on the unit-length features (the final ones beside the
pooled outputs of earlier stages, `stage_features`) averaged with a 5-nearest-neighbour vote. Confident
learning (`cleanlab.filter.find_label_issues`, pruned both by class and by noise rate) counts the pictures whose
given label the heads confidently disagree with; that many pictures with the lowest
`cleanlab.rank.get_label_quality_scores` (the out-of-fold probability of the given class: lower, more likely
wrong) are flagged, and the suggested label is the heads' most probable class. With 10% of the tutorial's
training photos moved to the other class, 14 to 16 of the 16 moved photos are flagged and at most 3 others
(43 draws); with 5% of TrashNet's labels flipped, see docs/performance.md ("Label issues").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from imgclf.audit.embeddings import Embeddings
from imgclf.audit.inspection import AuditedFile

MAX_FOLDS = 5
SEED = 0
LINEAR_C = 30.0
"""Inverse regularisation strength of the logistic regression on unit-length features: on TrashNet with 5% of
its labels flipped, 30 ranked them better than 1, 3, 10 or 100 on the stages' features (docs/performance.md)."""
NEIGHBOURS = 5
"""Neighbours voting, by cosine distance, in the nearest-neighbour head."""
MIN_PER_CLASS = 2
"""A class needs this many pictures for each fold to hold out one while the others still hold the class."""


@dataclass
class LabelIssue:
    """A picture whose label looks wrong: its folder's class (`given`), the class the heads see, and the score."""

    file: AuditedFile
    given: str
    suggested: str
    score: float
    """cleanlab's label quality, the out-of-fold probability of `given`: lower, more likely a wrong label."""


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Class probabilities (N, classes) of each row by heads fitted on the other folds only.

    `labels` are 0 to classes - 1, each with at least `MIN_PER_CLASS` rows.
    """
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    classes = int(labels.max()) + 1
    folds = StratifiedKFold(min(MAX_FOLDS, int(np.bincount(labels).min())), shuffle=True, random_state=seed)
    probabilities = np.zeros((len(labels), classes))
    # One thread: on matrices this small, BLAS threads only contend (2 cores, busy: a fit took 10× longer).
    with threadpool_limits(1):
        for train, held_out in folds.split(features, labels):
            probabilities[held_out] = _head_probabilities(features[train], labels[train], features[held_out])
    return probabilities


def _head_probabilities(train: np.ndarray, labels: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """The mean of a logistic regression's and a nearest-neighbour vote's probabilities for `held_out`.

    Together they rank flipped labels better than either alone: with 5% of TrashNet's labels flipped (three
    draws), 80% of the lowest-scored photos, as many as were flipped, were flipped ones, against 78% for the
    regression and 65% for the vote.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    linear = LogisticRegression(C=LINEAR_C, max_iter=500).fit(train, labels)
    vote = KNeighborsClassifier(min(NEIGHBOURS, len(labels)), metric="cosine", weights="distance").fit(train, labels)
    return (linear.predict_proba(held_out) + vote.predict_proba(held_out)) / 2


def find_label_issues(embeddings: Embeddings) -> tuple[list[LabelIssue], list[str]]:
    """The pictures whose labels look wrong, most suspect first, and warnings about classes left out.

    Classes with fewer than `MIN_PER_CLASS` pictures are left out (their pictures cannot be held out and still
    be learnt); with fewer than two classes left nothing is looked for.
    """
    counts = Counter(file.class_name for file in embeddings.files)
    class_names = sorted(name for name, count in counts.items() if count >= MIN_PER_CLASS)
    warnings = [
        f"Class {name} has only {count} readable picture; label issues need {MIN_PER_CLASS} per class, "
        "so it was not checked for them."
        for name, count in sorted(counts.items())
        if count < MIN_PER_CLASS
    ]
    if len(class_names) < 2:
        return [], [*warnings, "Label issues need two classes with 2 readable pictures or more; none were looked for."]
    rows = [row for row, file in enumerate(embeddings.files) if file.class_name in class_names]
    labels = np.array([class_names.index(embeddings.files[row].class_name) for row in rows])
    features = embeddings.features if embeddings.label_features is None else embeddings.label_features
    probabilities = out_of_fold_probabilities(features[rows], labels)
    return _rank_issues([embeddings.files[row] for row in rows], labels, probabilities, class_names), warnings


def suspected_label_errors(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Row indices of the suspected label errors: as many as cleanlab's confident learning counts (pruned both by
    class and by noise rate), taken by lowest self-confidence (the out-of-fold probability of the given class).

    Confident learning's own choice among the rows (`filter_by="both"`) keeps some whose given class is fairly
    probable and passes over less probable ones: with 5% of TrashNet's labels flipped (seeds 0 1 2), taking as
    many by self-confidence instead raised the share of flipped photos flagged from 86.8% to 91.0%, and the share
    of flagged photos that were flipped from 66.4% to 69.7% (docs/performance.md, "Label issues").
    """
    from cleanlab.filter import find_label_issues as confident_learning
    from cleanlab.rank import get_label_quality_scores

    count = int(confident_learning(labels, probabilities, filter_by="both", n_jobs=1).sum())
    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    return np.argsort(scores, kind="stable")[:count]


def _rank_issues(
    files: list[AuditedFile], labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]
) -> list[LabelIssue]:
    """The suspected label errors among `files`, lowest label quality first."""
    from cleanlab.rank import get_label_quality_scores

    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    suggested = probabilities.argmax(axis=1)
    return [
        LabelIssue(files[i], class_names[labels[i]], class_names[suggested[i]], round(float(scores[i]), 4))
        for i in sorted(suspected_label_errors(labels, probabilities), key=lambda i: (scores[i], files[i].path))
    ]
