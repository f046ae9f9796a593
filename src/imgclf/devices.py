"""Where PyTorch runs and in what precision: `--device auto|cpu|cuda` and `--precision auto|fp32|bf16|fp16`.

CUDA is only touched when asked for, or by `auto` when `torch.cuda.is_available()`, so CPU-only machines never
initialise it. Mixed precision is autocast: bf16 on GPUs that support it and on CPUs with native bf16
(AVX512-BF16 or AMX); fp16 only on CUDA, with a gradient scaler (see `gradient_scaler`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from imgclf.config import ImgclfError

CPU = torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; asking for CUDA without one is an error.

    >>> resolve_device("auto")
    device(type='cpu')
    """
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ImgclfError(f"No CUDA device is available. Received: --device={name}. Use --device cpu or auto.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision` on `device`, or None for plain fp32.

    `auto` is bf16 where the hardware is fast at it, fp16 on a GPU without bf16, and fp32 elsewhere.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise ImgclfError(
                f"fp16 training needs a CUDA device. Received: --precision=fp16 on {device.type}. "
                "Use --precision bf16 or fp32 on a CPU."
            )
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def gradient_scaler(device: torch.device, autocast_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, active only for fp16 (whose small gradients would underflow); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)


def pins_memory(device: torch.device) -> bool:
    """Whether batches for `device` go through page-locked memory, so copies to it can be asynchronous."""
    return device.type == "cuda"
