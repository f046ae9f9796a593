"""Run the Keras tutorial's experiments (bench/keras_tutorial.py) in their own TensorFlow venv, for comparison.

    .venv/bin/python bench/keras_compare.py --experiment cnn --epochs 3
    .venv/bin/python bench/keras_compare.py --experiment vgg16 --epochs 30 --vgg-weights vgg16_notop.h5

or from Python (bench/run_all.py does this; nothing here imports TensorFlow):

    from keras_compare import run_keras
    result = run_keras("cnn", data, epochs=30)  # keras_tutorial.py's JSON plus "wall_seconds"

The first call creates `.venv-keras` next to `.venv` (1.7 GB; under a minute from PyPI here) and later calls
reuse it. TensorFlow gets a venv of its own so that imgclf's stays as its users install it, and so that neither
framework is loaded in the other's process while it is timed.

"wall_seconds" is the whole subprocess: Python and TensorFlow start-up (about 5 s), reading the images, building
the model, training, and `fit`'s teardown after the last epoch, which took from 2 to 50 s here (mostly in
Python's garbage collector). "peak_rss_mb" is the Keras process's own high-water mark, which it reports itself;
`getrusage(RUSAGE_CHILDREN)` cannot give it reliably, as it holds the largest child ever waited for (pip, an
earlier run), not the latest.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from common import add_data_option

REPO_ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = Path(__file__).with_name("keras_tutorial.py")
VENV_PYTHON = "python3.11"
# ImageDataGenerator loads images with Pillow and transforms them with scipy; tf-keras declares neither.
KERAS_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "scipy==1.17.1", "pillow==13.0.0"]
# tf-keras requires `tensorflow`, which pip would install as a second, GPU-enabled copy over tensorflow-cpu's
# files (+0.5 GB); --no-deps keeps the CPU build alone (`pip check` then complains, harmlessly).
TF_KERAS_REQUIREMENT = "tf-keras==2.21.0"
STDERR_TAIL_LINES = 20
# A run is killed past this: the startup plus about 5× the slowest step seen (vgg16, 1.8 s on 2 busy cores).
STARTUP_SECONDS = 300
STEP_SECONDS_LIMIT = 10


def ensure_keras_venv(path: Path = REPO_ROOT / ".venv-keras") -> Path:
    """Return the python of a venv at `path` holding TensorFlow and tf-keras, creating it if needed.

    Idempotent: a `.installed` file listing the requirements marks a finished install, and a change to the
    pinned versions installs again. Raises RuntimeError naming the failed command when the install fails.
    """
    python = path / "bin" / "python"
    marker = path / ".installed"
    requirements = "\n".join([*KERAS_REQUIREMENTS, TF_KERAS_REQUIREMENT]) + "\n"
    if marker.is_file() and marker.read_text() == requirements:
        return python
    print(f"Setting up the Keras venv {path} (1.7 GB; a minute or more)", file=sys.stderr)
    for command in (
        [VENV_PYTHON, "-m", "venv", str(path)],
        [str(python), "-m", "pip", "install", *KERAS_REQUIREMENTS],
        [str(python), "-m", "pip", "install", "--no-deps", TF_KERAS_REQUIREMENT],
    ):
        print(f"$ {shlex.join(command)}", file=sys.stderr)
        try:
            subprocess.run(command, check=True, stdout=sys.stderr)
        except (OSError, subprocess.CalledProcessError) as error:
            raise RuntimeError(
                f"Could not set up the Keras venv {path}: `{shlex.join(command)}` failed ({error}); "
                f"run it by hand to see why, or delete {path} to start over."
            ) from error
    marker.write_text(requirements)
    return python


def run_keras(
    experiment: str,
    data: Path,
    epochs: int,
    steps_per_epoch: int = 30,
    batch_size: int = 32,
    seed: int = 0,
    vgg_weights: Path | None = None,
    python: Path | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Run keras_tutorial.py in the Keras venv and return its JSON result with "wall_seconds" added.

    Its stderr (Keras's per-epoch log) is copied to ours as it comes.

    Args:
        experiment: "cnn" or "vgg16".
        data: a folder holding training_set/ and val_set/.
        vgg_weights: Keras's VGG16 ImageNet file (`..._notop.h5`); without it VGG16 starts from random weights.
        python: the Keras venv's python (default: `ensure_keras_venv()`).
        timeout_s: kill the run after this many seconds (default: generous for the number of steps).

    Raises:
        RuntimeError: with the last lines of its stderr when the run fails or times out.
    """
    python = python or ensure_keras_venv()
    command = [
        str(python),
        str(TUTORIAL),
        f"--experiment={experiment}",
        f"--data={data}",
        f"--epochs={epochs}",
        f"--steps-per-epoch={steps_per_epoch}",
        f"--batch-size={batch_size}",
        f"--seed={seed}",
    ]
    if vgg_weights is not None:
        command.append(f"--vgg-weights={vgg_weights}")
    if timeout_s is None:
        timeout_s = STARTUP_SECONDS + epochs * steps_per_epoch * STEP_SECONDS_LIMIT
    started = time.perf_counter()
    returncode, stdout, stderr_tail = run_echoing_stderr(command, timeout_s)
    wall_seconds = time.perf_counter() - started
    if returncode is None:
        problem = f"was killed after {timeout_s:.0f} s"
    elif returncode != 0:
        problem = f"exited with {returncode}"
    elif not stdout.strip():
        problem = "printed no JSON line"
    else:
        return {**json.loads(stdout.strip().splitlines()[-1]), "wall_seconds": wall_seconds}
    raise RuntimeError(f"`{shlex.join(command)}` {problem}; the end of its stderr:\n{stderr_tail}")


def run_echoing_stderr(command: list[str], timeout_s: float) -> tuple[int | None, str, str]:
    """Run `command`, copying its stderr to ours line by line; return (exit code, stdout, last stderr lines).

    The exit code is None when the command ran past `timeout_s` and was killed.
    """
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    timed_out = threading.Event()
    # stdout goes to a file: a pipe nobody reads while we read stderr would block a chatty child.
    with (
        tempfile.TemporaryFile("w+") as stdout,
        subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True, errors="replace") as child,
    ):

        def kill() -> None:
            timed_out.set()
            child.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        for line in child.stderr:
            sys.stderr.write(line)
            tail.append(line)
        timer.cancel()
        returncode = child.wait()
        stdout.seek(0)
        output = stdout.read()
    return (None if timed_out.is_set() else returncode), output, "".join(tail)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=["cnn", "vgg16"], default="cnn")
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vgg-weights", type=Path, help="VGG16 ImageNet weights (default: random, for timing)")
    parser.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv-keras", help="the Keras venv to use or make")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        result = run_keras(
            args.experiment,
            args.data,
            args.epochs,
            seed=args.seed,
            vgg_weights=args.vgg_weights,
            python=ensure_keras_venv(args.venv),
        )
    except RuntimeError as error:
        sys.exit(str(error))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
