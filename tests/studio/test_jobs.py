"""The studio's job queue, with real trainings in real worker processes (seed-cnn on a few real photos)."""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import threading

import psutil
import pytest
from tests.conftest import read_history

import imgclf
from imgclf.studio.jobs import Job, JobQueue
from imgclf.studio.workspace import StudioError, Workspace

TINY = {"epochs": 3, "steps_per_epoch": 3, "batch_size": 8, "seed": 0}
"""The cnn recipe, shortened: a few seconds of training."""


@pytest.fixture
def jobs(workspace: Workspace) -> JobQueue:
    jobs = JobQueue(workspace)
    yield jobs
    jobs.close()


def collect(jobs: JobQueue, job_id: str, after: int = 0, each=None) -> list[dict]:
    """Every event of the job until its last, calling `each(event)` as each one comes."""

    async def listen() -> list[dict]:
        events = []
        async for event in jobs.events(job_id, after):
            events.append(event)
            if each is not None:
                each(event)
        return events

    return asyncio.run(listen())


def no_worker_left() -> bool:
    """No worker process (nor any process it started) and no watcher thread is left; multiprocessing's own
    resource tracker, which lives as long as the tests, is not a worker."""
    processes = [
        child
        for child in psutil.Process().children(recursive=True)
        if "multiprocessing.resource_tracker" not in " ".join(child.cmdline())
    ]
    threads = [thread for thread in threading.enumerate() if thread.name.startswith("studio-job-")]
    return multiprocessing.active_children() == [] and processes == [] and threads == []


def test_jobs_run_one_at_a_time_epoch_by_epoch_and_close_stops_the_running_one(project, jobs):
    quick = jobs.submit(project, "train", {"recipe": "quick", "options": {"epochs": 3, "batch_size": 8}})
    audit = jobs.submit(project, "audit", {})
    long_training = jobs.submit(project, "train", {"recipe": "cnn", "options": {**TINY, "epochs": 100}})
    waiting_while_training = []

    def check_the_others(event: dict) -> None:
        if event["type"] != "done":  # once done, the next job starts
            waiting_while_training.append((jobs.get(audit.id).state, jobs.get(long_training.id).state))

    events = collect(jobs, quick.id, each=check_the_others)

    assert set(waiting_while_training) == {("queued", "queued")}
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done" and "log" in kinds
    assert [event["seq"] for event in events] == sorted({event["seq"] for event in events})  # each told once
    assert [event["epoch"] for event in events if event["type"] == "epoch"] == [1, 2, 3]
    steps = [event for event in events if event["type"] == "step"]
    assert (steps[0]["epoch"], steps[0]["epochs"], steps[0]["step"], steps[0]["steps"]) == (1, 3, 1, 3)
    assert all(step["eta_s"] is None or step["eta_s"] >= 0 for step in steps)
    assert kinds.index("step") < kinds.index("epoch")
    run_dir = project.runs_dir / events[-1]["run"]
    assert events[-1]["run"].startswith("efficientnet_lite0-") and quick.state == "done"
    assert [float(row["val_loss"]) for row in read_history(run_dir)] == [row["val_loss"] for row in quick.history]
    run = imgclf.load(run_dir)
    assert run.config.train.val_split == 0.2 and run.config.dataset["features_cached"]  # the quick recipe's
    assert run.predict(sorted((project.data_dir / "planes").iterdir())[0]).label in ("cars", "planes")

    audit_events = collect(jobs, audit.id)
    assert audit_events[-1]["type"] == "done" and (project.audit_dir / "audit.json").is_file()
    assert audit.started >= quick.finished

    def close_once_training(event: dict) -> None:
        if event["type"] == "step" and long_training.state == "running":
            jobs.close()

    last = collect(jobs, long_training.id, each=close_once_training)[-1]
    assert last["type"] == "cancelled" and long_training.state == "cancelled"
    assert no_worker_left()


def test_cancel_keeps_the_last_complete_epoch_and_resume_trains_on_to_the_end(project, jobs):
    training = jobs.submit(project, "train", {"recipe": "cnn", "options": {**TINY, "epochs": 100}})

    def cancel_after_epoch_2(event: dict) -> None:
        if event["type"] == "epoch" and event["epoch"] == 2:
            jobs.cancel(training.id)

    last = collect(jobs, training.id, each=cancel_after_epoch_2)[-1]

    saved = len(read_history(project.runs_dir / training.run))
    assert last == {"type": "cancelled", "message": last["message"], "run": training.run, "seq": last["seq"]}
    assert 2 <= saved < 100 and f"epoch {saved} is saved" in last["message"] and training.state == "cancelled"
    assert [row["epoch"] for row in training.history] == list(range(1, saved + 1))

    resumed = jobs.submit(project, "resume", {"run": training.run, "epochs": saved + 2})
    with pytest.raises(StudioError, match=f"is being trained by job {resumed.id}"):
        jobs.submit(project, "resume", {"run": training.run, "epochs": saved + 3})
    events = collect(jobs, resumed.id)

    assert events[-1] == {"type": "done", "run": training.run, "seq": events[-1]["seq"]}
    assert [event["epoch"] for event in events if event["type"] == "epoch"] == list(range(1, saved + 3))
    assert len(read_history(project.runs_dir / training.run)) == saved + 2
    assert imgclf.load(project.runs_dir / training.run).metrics["accuracy"] is not None


SERVER = """
import asyncio, sys
from imgclf.studio.jobs import Job, JobQueue
from imgclf.studio.workspace import Workspace

workspace = Workspace(sys.argv[1])
jobs = JobQueue(workspace)
job = jobs.submit(workspace.project("cars-planes"), "train", {"recipe": "cnn", "options": {"epochs": 1000}})

async def train_until_told():
    async for event in jobs.events(job.id):
        if event["type"] == "step":
            print("training", flush=True)
            sys.stdin.readline()  # the test kills the server here, or says "exit" (with no jobs.close())
            return

asyncio.run(train_until_told())
"""


@pytest.mark.parametrize("server_goes", ["killed", "exits"])
def test_a_worker_stops_when_its_server_goes(project, server_goes):
    command = [sys.executable, "-c", SERVER, str(project.root.parent)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "training\n"
        workers = [
            child
            for child in psutil.Process(server.pid).children()
            if "multiprocessing.resource_tracker" not in " ".join(child.cmdline())
        ]
        assert len(workers) == 1
        if server_goes == "killed":
            server.kill()
        else:
            server.stdin.write("exit\n")
            server.stdin.flush()
            assert server.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(workers, timeout=60)
    finally:
        server.kill()
        server.wait()
    assert alive == []


def test_a_job_numbers_every_event_and_keeps_only_the_latest_of_consecutive_steps(project):
    job = Job("1", project, "train", None)
    step = {"type": "step", "epoch": 1, "epochs": 2, "step": 1, "steps": 9, "eta_s": None}
    for event in ({"type": "queued"}, step, step | {"step": 5, "eta_s": 3.0}, {"type": "log", "message": "hi"}):
        job.keep(event)
    job.keep(step | {"epoch": 2, "step": 9, "eta_s": 0.5})

    assert [(event["type"], event["seq"]) for event in job.events] == [
        ("queued", 1),
        ("step", 3),
        ("log", 4),
        ("step", 5),
    ]
    assert job.events[1]["step"] == 5 and job.progress == {"epoch": 2, "epochs": 2, "step": 9, "steps": 9, "eta_s": 0.5}
