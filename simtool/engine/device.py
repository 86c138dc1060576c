"""Device and precision selection, and how the steps run there (the train spec's ``engine`` section)."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass

import torch

from simtool.errors import UserError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` → CUDA (this process's local rank under torchrun), then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu.")
        rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", rank % torch.cuda.device_count())
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UserError("--device mps was asked for but Apple MPS is not available; use --device auto or cpu.")
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 autocast on CUDA (when supported), fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cpu":
        return "bf16"
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- the train spec's ``engine`` section: how the steps run on the device ----------------------------


@dataclass(frozen=True)
class EngineOptions:
    """The ``engine`` section of a train spec resolved for a device (``auto``: on for CUDA, off elsewhere)."""

    channels_last: bool = False
    compile: bool = False
    tf32: bool = False
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch: int | None = None
    decode: str = "workers"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_engine(engine, device: torch.device) -> EngineOptions:
    """:class:`EngineOptions` of ``engine`` (a :class:`~simtool.specs.common.EngineSpec` or any object
    with its fields) on ``device``; the checks a user can fix come first (e.g. ``compile`` where
    torch.compile cannot run)."""
    cuda = device.type == "cuda"

    def on(value) -> bool:
        return cuda if value == "auto" else bool(value)

    opts = EngineOptions(
        channels_last=on(engine.channels_last),
        compile=bool(engine.compile),
        tf32=on(engine.tf32) and cuda,  # TF32 exists on CUDA only
        pin_memory=on(engine.pin_memory) and cuda,
        persistent_workers=on(engine.persistent_workers),
        prefetch=(4 if cuda else None) if engine.prefetch == "auto" else int(engine.prefetch),
        decode=engine.decode,
    )
    if opts.compile:
        check_compile(device)
    return opts


def check_compile(device: torch.device) -> None:
    """One sentence when ``torch.compile`` cannot work here (checked before anything is written)."""
    fix = "set engine.compile=false to train without compiling"
    try:
        import torch._dynamo

        supported = torch._dynamo.is_dynamo_supported()
    except Exception:  # noqa: BLE001 - an import failure is as good as unsupported
        supported = False
    if not supported:
        raise UserError(f"engine.compile=true needs torch.compile, which PyTorch {torch.__version__} does not support on this Python; {fix}.")
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton

            triton = has_triton()
        except Exception:  # noqa: BLE001
            triton = False
        if not triton:
            raise UserError(f"engine.compile=true on CUDA needs Triton (pip install triton), which is not installed; {fix}.")
    elif device.type == "cpu":
        names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(name and shutil.which(name) for name in names):
            raise UserError(f"engine.compile=true on the CPU needs a C++ compiler (g++ or clang++) on PATH, and none was found; {fix}.")


def compile_failure(exc: BaseException) -> UserError | None:
    """The sentence for an error that torch.compile raised while compiling the first steps, else None."""
    mod = type(exc).__module__ or ""
    if not (mod.startswith("torch._dynamo") or mod.startswith("torch._inductor") or "compile" in type(exc).__name__.lower()):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UserError(f"engine.compile=true could not compile the model ({type(exc).__name__}: {first[:200]}); "
                     "set engine.compile=false to train without compiling.")


def to_channels_last(model: torch.nn.Module) -> int:
    """Put every 4-D parameter and buffer of ``model`` in channels-last memory format, in place (the
    same values and state-dict keys; convolutions then run channels-last). Returns how many."""
    n = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
            t.data = t.data.contiguous(memory_format=torch.channels_last)
            n += 1
    return n


def optimizer_state_like_params(optimizer: torch.optim.Optimizer) -> None:
    """Give every optimizer state tensor the memory format of its parameter (a checkpoint stores them
    contiguous; a channels-last model's moments are channels-last in an uninterrupted run)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if p.dim() != 4 or not p.is_contiguous(memory_format=torch.channels_last):
                continue
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    state[key] = value.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool | None):
    """Inside the block, float32 matrix products and cuDNN convolutions on CUDA use TF32 tensor cores
    (``enabled``) or full float32 (False); the previous settings come back afterwards. None (every
    device but CUDA) changes nothing."""
    if enabled is None:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        before = (matmul.fp32_precision, cudnn.conv.fp32_precision)
        value = "tf32" if enabled else "ieee"
        matmul.fp32_precision, cudnn.conv.fp32_precision = value, value
        try:
            yield
        finally:
            matmul.fp32_precision, cudnn.conv.fp32_precision = before
    else:  # PyTorch before 2.9
        before = (matmul.allow_tf32, cudnn.allow_tf32)
        matmul.allow_tf32, cudnn.allow_tf32 = bool(enabled), bool(enabled)
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = before


def cuda_memory(device: torch.device, reset: bool = True) -> float | None:
    """Peak memory allocated on a CUDA ``device`` since the last reset, in GiB (then reset); None elsewhere."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return peak


def cuda_total_memory(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30
