"""Training in several processes with PyTorch's DistributedDataParallel (DDP), started by torchrun.

torchrun --standalone --nproc-per-node 2 -m imgclf train data/training_set --val data/val_set --batch-size 32
imgclf train data/training_set --val data/val_set --batch-size 32 --nproc 2      # runs the line above

Without torchrun's variables (or with one process) nothing here talks to another process: `connect` returns
the single process and every helper is a no-op, so one process trains exactly as it always has.

Under torchrun every process holds the whole model and optimiser; the processes start from the same
weights, split every global batch between them, and DDP averages their gradients, so they take the same
steps and keep identical weights. The main process (rank 0) alone writes the run directory and logs at INFO;
the others log only warnings. gloo carries the traffic between CPU processes, nccl between GPUs (one per
process, its local rank).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from imgclf.config import ConfigError, ImgclfError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Added to a seed per rank, so the processes draw different augmentations and dropout masks (rank 0 none).
RANK_SEED_STEP = 1_000_033


def torchrun_environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the variables torchrun sets; None outside torchrun or with one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ["RANK"])
    return rank, world_size, int(os.environ.get("LOCAL_RANK", rank))


def check_batch_size(batch_size: int, world_size: int) -> None:
    """Raise `ConfigError` unless the global `batch_size` splits evenly over `world_size` processes."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        suggestion = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise ConfigError(
            f"Invalid option --batch-size for {world_size} processes. Received: --batch-size={batch_size}, "
            f"--nproc={world_size}. --batch-size is the global batch and each process trains on an equal part "
            f"of it: use a multiple of {world_size}, such as {suggestion}."
        )


@dataclass(frozen=True)
class Shard:
    """One process's part of a global batch: the rows it trains on, and the weight of their mean loss.

    A process whose part is empty (a last batch smaller than the number of processes) still has to take part
    in DDP's gradient averaging: it trains on one stand-in row with weight 0.
    """

    rows: list[int]
    loss_weight: float


def shard_batches(plan: Sequence[Sequence[int]], rank: int, world_size: int) -> list[Shard]:
    """Process `rank`'s part of every global batch of `plan`: rows `rank`, `rank + world_size`, ... of each.

    This is `DistributedSampler`'s striding, applied to each global batch rather than to one shuffled pass
    over the dataset. `data.epoch_batches` already draws the global batches from (seed, epoch) alone, with
    several passes per epoch under `--steps-per-epoch` and a smaller last batch otherwise; `DistributedSampler`
    would draw its own permutation instead, so N processes would not see the batches one process sees. Split
    this way, step k of N processes trains on exactly the images of step k of one process.

    DDP averages the processes' gradients. With the loss weight `world_size × rows / batch`, the average is the
    gradient of the mean loss over the whole global batch, also when the parts differ in size (a smaller last
    batch); on parts of equal size the weight is exactly 1.

    >>> shard_batches([[5, 2, 7, 1], [3]], rank=1, world_size=2)
    [Shard(rows=[2, 1], loss_weight=1.0), Shard(rows=[3], loss_weight=0.0)]
    """
    shards = []
    for batch in plan:
        rows = list(batch[rank::world_size])
        shards.append(Shard(rows or list(batch[:1]), world_size * len(rows) / len(batch)))
    return shards


@dataclass(frozen=True)
class Processes:
    """The processes training together, as this one sees them: its rank, how many there are, its device.

    The default is the single process: rank 0 of 1 on the CPU.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """True when there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for rank 0, which writes the run directory."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel, which averages gradients over the processes; on one process as is.

        Call it again whenever the set of trainable parameters changes (DDP fixes it when it wraps).
        """
        if not self.distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def shard(self, plan: Sequence[Sequence[int]]) -> list[Shard]:
        """This process's part of every global batch of `plan` (see `shard_batches`); on one process all of it."""
        return shard_batches(plan, self.rank, self.world_size)

    def take_turns(self, plan: list[list[int]]) -> list[list[int]]:
        """Every `world_size`-th batch of `plan` from this process's rank on: each image goes to one process."""
        return plan[self.rank :: self.world_size]

    def seed(self, seed: int) -> int:
        """A seed of this process's own, derived from `seed` (rank 0 gets `seed` itself)."""
        return seed + RANK_SEED_STEP * self.rank

    def sum(self, *values: float) -> list[float]:
        """Each of `values` added up over the processes; on one process the values as they are.

        The totals are gathered and added in rank order on every process, so that all of them get bit-identical
        numbers and take identical decisions (best epoch, early stopping) from them.
        """
        if not self.distributed:
            return list(values)
        local = torch.tensor(values, dtype=torch.float64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return torch.stack(gathered).sum(dim=0).tolist()

    def gather(self, items: list[T]) -> list[T]:
        """Every process's `items`, in rank order, on every process; on one process `items` itself."""
        if not self.distributed:
            return items
        gathered: list[list[T]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]

    def from_main(self, make: Callable[..., T], *args: object) -> T:
        """`make(*args)` run on the main process alone, its result (or its `ImgclfError`) given to every process."""
        if not self.distributed:
            return make(*args)
        box: list[object] = [None]
        if self.is_main:
            try:
                box[0] = (make(*args), None)
            except ImgclfError as error:
                box[0] = (None, error)
        dist.broadcast_object_list(box, src=0, device=self.device)
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on the first process of each machine, then on the others (to fill a cache they share)."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def close(self) -> None:
        """Leave the process group, if `connect` made it."""
        if self.owns_group:
            dist.destroy_process_group()


SINGLE_PROCESS = Processes()


def connect(device: torch.device) -> Processes:
    """Join the process group of the processes torchrun started with this one; outside torchrun, the single process.

    gloo on the CPU, nccl on CUDA, where each process takes the GPU of its local rank (and CUDA is touched only
    then). Processes other than rank 0 lower imgclf's logging to warnings.
    """
    environment = torchrun_environment()
    if environment is None:
        return Processes(device=device)
    rank, world_size, local_rank = environment
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started process {local_rank} on this machine, which has {torch.cuda.device_count()} "
                f"GPUs. Received: --nproc={world_size}. Start at most one process per GPU, or use --device cpu."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:
        logging.getLogger("imgclf").setLevel(logging.WARNING)
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group)


def torchrun_arguments(nproc: int, imgclf_args: Sequence[str]) -> list[str]:
    """torchrun's arguments that run `imgclf <imgclf_args>` in `nproc` processes on this machine."""
    return ["--standalone", f"--nproc-per-node={nproc}", "-m", "imgclf", *imgclf_args]


def launch(nproc: int, imgclf_args: Sequence[str]) -> int:
    """Run `imgclf <imgclf_args>` in `nproc` processes through torchrun, wait, and return the exit code.

    torchrun's launcher runs in this process (`torch.distributed.run.run`), not in a child of it: Ctrl-C or
    SIGTERM reaching this process is passed on to the training processes, which save their last epoch and
    stop (exit code 130 or 143), and a failed process ends in one line instead of torchrun's traceback.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would give each process one thread; share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nproc)))
    # torchrun's own notices (a process failed, shutting down on a signal) would only repeat what imgclf says.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(torchrun_arguments(nproc, imgclf_args)))
    except SignalException as error:
        return 128 + int(error.sigval)
    except ChildFailedError as error:
        return _exit_code(error.failures)
    return 0


def _exit_code(failures: dict) -> int:
    """The exit code for failed training processes; says which failed unless the main one told the user why."""
    codes = {rank: failure.exitcode for rank, failure in failures.items()}
    if 130 in codes.values():  # interrupted: the main process said where the last epoch is saved
        return 130
    if codes.get(0) != 1:  # else the main process printed the error
        listing = ", ".join(
            f"process {rank} " + (f"exit code {code}" if code >= 0 else f"killed by signal {-code}")
            for rank, code in sorted(codes.items())
        )
        log.error("Training stopped: %s (see the messages above).", listing)
    if 1 in codes.values():
        return 1
    first = codes[min(codes)]
    return first if first > 0 else 128 - first
