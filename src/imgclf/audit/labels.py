"""Suspected label errors: out-of-fold class probabilities from the backbone's features, ranked by cleanlab.

Every labelled picture of every split is predicted by heads that never saw it (stratified k-fold, k = 5, fewer
for a class with fewer pictures), and the probabilities of five such fold splits are averaged: a logistic
regression on the top principal components of the unit-length features (the final ones beside the pooled outputs
of earlier stages, `stage_features`) averaged with a 5-nearest-neighbour vote on the features themselves.
Confident learning (`cleanlab.filter.find_label_issues`, pruned by noise rate) counts the pictures whose given
label the heads confidently disagree with; that many pictures with the lowest
`cleanlab.rank.get_label_quality_scores` (the out-of-fold probability of the given class: lower, more likely
wrong) are flagged, and the suggested label is the heads' most probable class. How well it finds labels flipped
on purpose in the tutorial's photos and in TrashNet: docs/performance.md ("Label issues").
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from imgclf.audit.embeddings import Embeddings
from imgclf.audit.inspection import AuditedFile

MAX_FOLDS = 5
REPEATS = 5
"""Fold splits whose out-of-fold probabilities are averaged: one split's heads err where that split's folds happen
to fall, and the mean of five ranked TrashNet's flipped labels clearly better than one (docs/performance.md)."""
COMPONENTS = 256
"""The regression learns from this many principal components of the features: about four times faster than from
all of Lite0's 1,984 values, and as good at ranking (docs/performance.md)."""
SEED = 0
LINEAR_C = 30.0
"""Inverse regularisation strength of the logistic regression on unit-length features: on TrashNet with 5% of
its labels flipped, 30 ranked them better than 1, 3, 10 or 100 on the stages' features, and as well as 10 on
their principal components (docs/performance.md)."""
NEIGHBOURS = 5
"""Neighbours voting, by cosine distance, in the nearest-neighbour head."""
NEIGHBOUR_POOL = 50
"""Each picture's nearest neighbours are found once, this many, and every fold split's vote takes the nearest
`NEIGHBOURS` of them in its training folds (a picture none of whose 50 lies there gets no vote)."""
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
    """Class probabilities (N, classes) of each row: the mean over `REPEATS` fold splits of heads fitted on the
    other folds only.

    A fold's heads are a logistic regression on the rows' principal components and a nearest-neighbour vote by
    cosine distance, their probabilities averaged: together they ranked flipped labels better than either alone
    (with 5% of TrashNet's labels flipped, three draws, Lite0's final features: 80% of the lowest-scored photos,
    as many as were flipped, were flipped ones, against 78% for the regression and 65% for the vote). `labels`
    are 0 to classes - 1, each with at least `MIN_PER_CLASS` rows.
    """
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    folds = min(MAX_FOLDS, int(np.bincount(labels).min()))
    splits = [
        split
        for repeat in range(REPEATS)
        for split in StratifiedKFold(folds, shuffle=True, random_state=seed + repeat).split(features, labels)
    ]
    components = principal_components(features, COMPONENTS, seed)
    vote = NeighbourVote.among(features, labels)

    def held_out_probabilities(split: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        train, held_out = split
        linear = LogisticRegression(C=LINEAR_C, max_iter=500).fit(components[train], labels[train])
        return (linear.predict_proba(components[held_out]) + vote.probabilities(train, held_out)) / 2

    probabilities = np.zeros((len(labels), vote.classes))
    # A fit a thread, each on one BLAS thread: on matrices this small BLAS threads only contend with each other.
    with threadpool_limits(1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for (_, held_out), fold_probabilities in zip(splits, pool.map(held_out_probabilities, splits)):
            probabilities[held_out] += fold_probabilities / REPEATS
    return probabilities


def principal_components(features: np.ndarray, count: int, seed: int = SEED) -> np.ndarray:
    """`features` projected on their `count` principal components (randomised SVD, seeded); `features` themselves
    when they have no more values or rows than that."""
    from sklearn.decomposition import PCA

    if min(features.shape) <= count:
        return features
    return PCA(count, svd_solver="randomized", random_state=seed).fit_transform(features)


@dataclass
class NeighbourVote:
    """The out-of-fold heads' second half: a vote of the `NEIGHBOURS` nearest training rows, weighted by inverse
    cosine distance, for any split of the rows into training and held-out ones.

    The neighbours are searched once (`NEIGHBOUR_POOL` a row) rather than once a fold: the search costs the
    square of the number of pictures, and there are `REPEATS` × `MAX_FOLDS` folds.
    """

    labels: np.ndarray
    indices: np.ndarray
    """(N, pool): each row's nearest other rows, nearest first."""
    distances: np.ndarray
    """(N, pool): their cosine distances."""

    @property
    def classes(self) -> int:
        return int(self.labels.max()) + 1

    @classmethod
    def among(cls, features: np.ndarray, labels: np.ndarray) -> NeighbourVote:
        """The vote among `features`, labelled 0 to classes - 1 by `labels`."""
        from sklearn.neighbors import NearestNeighbors

        search = NearestNeighbors(n_neighbors=min(NEIGHBOUR_POOL, len(features) - 1), metric="cosine").fit(features)
        distances, indices = search.kneighbors()  # without the query rows: none is its own neighbour
        return cls(labels, indices, distances)

    def probabilities(self, train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        """Class probabilities (len(held_out), classes) from each held-out row's nearest `train` rows, as
        scikit-learn's `KNeighborsClassifier(weights="distance")` gives them (neighbours at distance 0, when a row
        has some, vote alone); equal for a row with no `train` row among its pool."""
        in_train = np.zeros(len(self.labels), dtype=bool)
        in_train[train] = True
        indices, distances = self.indices[held_out], self.distances[held_out]
        voters = in_train[indices]
        voters &= np.cumsum(voters, axis=1) <= NEIGHBOURS
        weights = np.where(voters, 1 / np.maximum(distances, np.finfo(distances.dtype).tiny), 0.0)
        identical = voters & (distances == 0)
        weights = np.where(identical.any(axis=1, keepdims=True), identical, weights)
        votes = np.zeros((len(held_out), self.classes))
        np.add.at(votes, (np.arange(len(held_out))[:, None], self.labels[indices]), weights)
        totals = votes.sum(axis=1, keepdims=True)
        return np.divide(votes, totals, out=np.full_like(votes, 1 / self.classes), where=totals > 0)


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
    """Row indices of the suspected label errors: as many as cleanlab's confident learning counts (pruned by noise
    rate), taken by lowest self-confidence (the out-of-fold probability of the given class).

    Confident learning's own choice among the rows keeps some whose given class is fairly probable and passes
    over less probable ones, so only its count is taken. Of its counts, pruning by noise rate most often fell
    where both of the project's targets hold (90% of the flipped photos flagged, 70% of the flagged ones
    flipped): on 29 of 41 draws of TrashNet with 5% of its labels flipped, against 14 for pruning both by class
    and by noise rate (docs/performance.md, "Label issues").
    """
    from cleanlab.filter import find_label_issues as confident_learning
    from cleanlab.rank import get_label_quality_scores

    count = int(confident_learning(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1).sum())
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
