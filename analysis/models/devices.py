"""Device / dtype selection shared by every model wrapper.

Kept tiny and torch-only so the CPU path and the GPU path go through the same code: `auto` means CUDA
with bf16 when a GPU is present, else CPU with float32 (bf16 matmuls on most CPUs are slower and less
precise than fp32, so we never pick them implicitly there).
"""

from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> torch.device, with a clear error if unavailable."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested but torch sees no CUDA GPU")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on CUDA (when supported), float32 elsewhere; or an explicit name."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown --dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
