"""Numeric precision of the torch taggers: float32, bfloat16, or the faster of the two.

``bf16`` runs each network's convolutional body in bfloat16 (the frontend, the last layers and
the sigmoid stay float32; see :mod:`calitag.models.mixed_precision`): on the CPU only where the
processor computes bfloat16 natively (AVX512-BF16 or AMX: elsewhere oneDNN emulates it, slower
than float32), on CUDA through ``torch.autocast`` where the GPU supports bfloat16. ``auto``
picks bf16 where it is native, the model's bf16 path was measured faster
(``ModelSpec.bf16_auto``) and a one-layer probe on this machine confirms it; float32 otherwise.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from calitag.errors import PrecisionError
from calitag.models.registry import ModelSpec

if TYPE_CHECKING:  # torch is imported by the functions that need it: yamnet runs without it
    import torch

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
#: /proc/cpuinfo flags of x86 CPUs that compute bfloat16 dot products natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The native-bfloat16 flags this CPU reports (empty where none, or no /proc/cpuinfo).

    Parameters
    ----------
    cpuinfo : Path
        The file to read (Linux's /proc/cpuinfo).

    Returns
    -------
    tuple of str
        Those of :data:`NATIVE_BF16_FLAGS` listed on the first ``flags`` line.
    """
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)
    return ()


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and why (for messages).

    Returns
    -------
    (bool, str)
        The answer and a short reason naming what was checked.
    """
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return False, f"{torch.cuda.get_device_name(device)} has no bfloat16 support"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags and torch.backends.mkldnn.is_available():
            return True, f"CPU flags {', '.join(flags)}"
        if not flags:
            return False, f"this CPU reports neither {' nor '.join(NATIVE_BF16_FLAGS)} (bfloat16 would be emulated)"
        return False, "torch was built without oneDNN (mkldnn)"
    return False, f"no bfloat16 path for {device.type} devices"


def _best_seconds(run: Any, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(repeats: int = 5) -> float:
    """float32 / bfloat16 time of one 3x3 convolution (64 -> 64 channels, 4 x 64 x 128 x 32
    input, about 1.2 GFLOP) on this CPU, measured once per process (tens of milliseconds).

    Returns
    -------
    float
        Above 1 when bfloat16 is faster.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 128, 32, generator=generator)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    conv16 = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    conv16.load_state_dict(conv.state_dict())
    conv16 = conv16.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    x16 = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fp32 = _best_seconds(lambda: conv(x), repeats)
        bf16 = _best_seconds(lambda: conv16(x16), repeats)
    return fp32 / bf16


def resolve_precision(precision: str, *, device: torch.device, spec: ModelSpec, model: Any) -> str:
    """Turn a precision request into the one to run: "fp32" or "bf16".

    Parameters
    ----------
    precision : {"fp32", "bf16", "auto"}
        The request.
    device : torch.device
        Where the model runs.
    spec : ModelSpec
        Its registry entry (``bf16_auto``: bf16 measured faster for this model).
    model : object
        The loaded network; bf16 needs its ``set_body_dtype`` method (the torch taggers).

    Returns
    -------
    str
        "fp32" or "bf16".

    Raises
    ------
    PrecisionError
        For an unknown request, or "bf16" on a model without a bfloat16 path (yamnet) or on a
        device without native bfloat16.
    """

    request = precision.strip().lower() if isinstance(precision, str) else precision
    if request not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if request == "fp32":
        return "fp32"
    has_path = callable(getattr(model, "set_body_dtype", None))  # the torch taggers have it
    if not has_path:
        if request == "bf16":
            raise PrecisionError(
                f"{spec.name} has no bf16 path (it runs with its own runtime in float32); "
                "use --precision fp32 or auto, or a torch tagger (cnn14, cnn-transformer, crnn-dcase2019)"
            )
        logger.info("%s: --precision auto runs it in float32 (no bf16 path)", spec.name)
        return "fp32"
    native, reason = bf16_support(device)
    if request == "bf16":
        if not native:
            raise PrecisionError(
                f"bf16 needs native bfloat16 on {device}: {reason}; use --precision fp32 (or auto, "
                "which falls back to fp32)"
            )
        return "bf16"
    if not native:
        logger.warning("--precision auto: %s, so %s runs in fp32", reason, spec.name)
        return "fp32"
    if not spec.bf16_auto:
        logger.info("--precision auto: %s measured no faster in bf16; running fp32", spec.name)
        return "fp32"
    if device.type == "cpu":
        speedup = cpu_bf16_speedup()
        if speedup < 1.1:
            logger.warning(
                "--precision auto: a bf16 convolution ran %.2fx the float32 speed on this CPU; running fp32",
                speedup,
            )
            return "fp32"
    return "bf16"
