"""How fast `imgclf` answers: median wall seconds of `imgclf --help` and `imgclf train --help`, each in a fresh
process, beside `python -c "import torch"`, the start the command line no longer pays for.

    .venv/bin/python bench/cli_start.py
    .venv/bin/python bench/cli_start.py --runs 20

Each command runs once unmeasured (the files are then in the page cache), then `--runs` times. Target: `imgclf
--help` under 0.5 s. The load average is printed with the figures: other work on the machine slows every row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "imgclf --help": [sys.executable, "-m", "imgclf", "--help"],
    "imgclf train --help": [sys.executable, "-m", "imgclf", "train", "--help"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}
TARGETS = {"imgclf --help": "< 0.5"}


def wall_seconds(command: list[str], runs: int) -> list[float]:
    """Wall seconds of `runs` runs of `command`, each in a fresh process, after one unmeasured run."""
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
    return seconds


def help_seconds(runs: int = 5) -> dict:
    """`imgclf --help`'s median wall seconds over `runs` fresh processes (a row of bench/run_all.py)."""
    return {"seconds": statistics.median(wall_seconds(COMMANDS["imgclf --help"], runs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each command (default 10)")
    args = parser.parse_args()
    rows = []
    for name, command in COMMANDS.items():
        seconds = wall_seconds(command, args.runs)
        rows.append([f"`{name}`", f"{statistics.median(seconds):.3f}", f"{min(seconds):.3f}", TARGETS.get(name, "")])
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} (1, 5, 15 min); median of {args.runs} runs")
    print("| command | median s | fastest s | target |\n|---|---|---|---|")
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))


if __name__ == "__main__":
    main()
