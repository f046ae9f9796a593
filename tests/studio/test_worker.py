"""The worker's progress events (throttled, with the time left) and its line for a bug, without a process."""

from __future__ import annotations

import pytest

from imgclf.studio import worker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sender:
    def __init__(self):
        self.events = []

    def send(self, event: dict) -> None:
        self.events.append(event)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(worker.time, "monotonic", clock)
    return clock


def test_step_events_come_a_few_a_second_with_the_time_left(clock):
    sender = Sender()
    progress = worker.StepEvents(sender, epochs=3)
    for epoch in (1, 2):
        for step in range(1, 11):  # 10 steps of 0.1 s, then 1 s of validation
            clock.now += 0.1
            progress(epoch, step, 10)
        clock.now += 1.0

    assert len(sender.events) == 2 * 4  # steps 1, 4, 7 and 10 of each epoch: 0.3 s apart, at least 0.25
    first, second, last = sender.events[0], sender.events[1], sender.events[-1]
    assert first == {"type": "step", "epoch": 1, "epochs": 3, "step": 1, "steps": 10, "eta_s": None}
    assert (second["step"], second["eta_s"]) == (4, 0.6 + 2 * 1.0)  # 6 steps of 0.1 s, then 2 epochs of 10
    # Epoch 1 took 2 s with its validation: 2 s for epochs 2 and 3 each, 0.9 s of which have gone.
    assert (last["epoch"], last["step"], last["eta_s"]) == (2, 10, 3.1)


def test_an_audits_steps_count_the_files_left(clock):
    sender = Sender()
    progress = worker.StepEvents(sender, epochs=None)
    clock.now += 2.0
    progress(None, 20, 100)

    assert sender.events == [{"type": "step", "epoch": None, "epochs": None, "step": 20, "steps": 100, "eta_s": 8.0}]


def test_a_bug_is_one_line_saying_what_and_where():
    try:
        {}["missing"]
    except KeyError as error:
        line = worker.bug_summary(error)

    assert line.startswith("KeyError: 'missing' (at test_worker.py:") and "\n" not in line
