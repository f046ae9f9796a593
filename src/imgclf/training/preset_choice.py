"""Which of the combinations a preset tried wins: each backbone's held-out scores (`Scored`), every backbone alone
and the best 2, 3, ... averaged, each without and with flip test-time augmentation (`Candidate`), and why the
winner won, in a sentence for the log and the run's recipe."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imgclf.evaluation import metrics
from imgclf.models import to_probabilities
from imgclf.models.ensemble import ensemble_name
from imgclf.training.linear_heads import HeldOut


@dataclass
class Scored:
    """One backbone's held-out logits (`HeldOut`), the temperature fitted to them, and what it took."""

    name: str
    held: HeldOut
    temperature: float
    seconds: float

    def probabilities(self, flip: bool) -> torch.Tensor:
        """Calibrated held-out probabilities, averaged with the mirrored images' when `flip`."""
        plain = to_probabilities(self.held.plain / self.temperature)
        return (plain + to_probabilities(self.held.mirrored / self.temperature)) / 2 if flip else plain


@dataclass
class Candidate:
    """A combination the preset tried: backbones (best first), flip test-time augmentation, held-out scores."""

    members: list[str]
    flip: bool
    accuracy: float
    log_loss: float

    @property
    def name(self) -> str:
        return ensemble_name(self.members, self.flip)

    def rank(self) -> tuple:
        """Sorts the winner first: higher accuracy, then lower log-loss, then fewer backbones, then no flip."""
        return (-self.accuracy, round(self.log_loss, 6), len(self.members), self.flip)


def scored_line(scored: Scored) -> str:
    accuracy = metrics.accuracy(scored.held.labels.numpy(), scored.probabilities(False).argmax(dim=1).numpy())
    return (
        f"{scored.name}: held-out accuracy {accuracy:.4f}, L2 {scored.held.l2:g}, temperature "
        f"{scored.temperature:.3f} ({scored.seconds:.1f} s)."
    )


def combinations(scored: list[Scored]) -> list[Candidate]:
    """Each backbone alone and the best 2, 3, ... together, each without and with flip test-time augmentation."""
    labels = scored[0].held.labels.numpy()

    def candidate(group: list[Scored], flip: bool) -> Candidate:
        probabilities = torch.stack([item.probabilities(flip) for item in group]).mean(dim=0).numpy()
        accuracy = metrics.accuracy(labels, probabilities.argmax(axis=1))
        return Candidate([item.name for item in group], flip, accuracy, metrics.log_loss(labels, probabilities))

    singles = [candidate([item], flip) for item in scored for flip in (False, True)]
    best_single = {}
    for single in sorted(singles, key=Candidate.rank):
        best_single.setdefault(single.members[0], single)
    order = sorted(scored, key=lambda item: best_single[item.name].rank())
    groups = [order[:size] for size in range(2, len(order) + 1)]
    return singles + [candidate(group, flip) for group in groups for flip in (False, True)]


def why_it_won(winner: Candidate, candidates: list[Candidate], scored_on: str) -> str:
    """One sentence: the winner's scores, against the runner-up's and the default recipe's (Lite0 alone)."""
    ranked = sorted(candidates, key=Candidate.rank)
    default = next(c for c in candidates if c.members == ["efficientnet_lite0"] and not c.flip)
    parts = [f"highest accuracy on {scored_on}: {winner.accuracy:.4f} (log-loss {winner.log_loss:.4f})"]
    if len(ranked) > 1:
        parts.append(f"next {ranked[1].name}: {ranked[1].accuracy:.4f} ({ranked[1].log_loss:.4f})")
    if default is not winner:
        parts.append(f"the default recipe (efficientnet_lite0 alone): {default.accuracy:.4f} ({default.log_loss:.4f})")
    return "; ".join(parts) + "; ties go to the lower log-loss, then fewer backbones, then no flip."


def candidate_record(candidate: Candidate) -> dict:
    return {
        "model": candidate.name,
        "flip": candidate.flip,
        "accuracy": round(candidate.accuracy, 6),
        "log_loss": round(candidate.log_loss, 6),
    }
