"""Precision and kernel policy of training: which autocast precision --amp runs on a device, the autocast
context and gradient scaler for it, and the process-wide kernel choice (deterministic or autotuned, TF32).
Precision policy lives here and in the loop (racecomp.engine), never in models.
"""
import contextlib
import os

import torch

from racecomp.errors import InputError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
# --amp's choices: a precision of AMP_DTYPES, or auto (resolve_amp picks one for the device).
AMP_CHOICES = ("auto", *AMP_DTYPES)
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA devices with bf16 tensor cores and cuDNN bf16 convolutions


def resolve_amp(amp, device):
    """The precision that runs for --amp `amp` on `device`: a key of AMP_DTYPES.

    auto: off on the CPU (bf16 autocast there pays only on CPUs with bf16 instructions: BENCHMARKS.md), on CUDA
    bf16 where the device has it natively (compute capability >= 8.0), else fp16 (a T4, sm75, has fp16 tensor
    cores only). bf16 on an older CUDA device is refused: torch.cuda.is_bf16_supported() and autocast accept it
    there because they count emulation, which is slower than fp32 or fails in cuDNN convolutions.
    Studies resolve --amp before recording their arguments, so args.json and the recipe hold what ran.
    """
    if amp not in AMP_CHOICES:
        raise InputError(f"--amp {amp!r}: must be one of {', '.join(AMP_CHOICES)}")
    device = torch.device(device)
    if device.type != "cuda":
        return "off" if amp == "auto" else amp
    capability = torch.cuda.get_device_capability(device)
    native_bf16 = capability >= NATIVE_BF16_CAPABILITY
    if amp == "auto":
        return "bf16" if native_bf16 else "fp16"
    if amp == "bf16" and not native_bf16:
        raise InputError(f"--amp bf16: {torch.cuda.get_device_name(device)} (compute capability "
                         f"{capability[0]}.{capability[1]}) only emulates bf16, slower than fp32; use --amp fp16 "
                         f"or auto (bf16 needs compute capability >= 8.0)")
    return amp


def configure_kernels(device, deterministic):
    """Process-wide kernel choice for training on `device`.

    deterministic: torch.use_deterministic_algorithms(warn_only=True) (an operation without a deterministic
    kernel warns and runs anyway), cuBLAS's fixed workspace, no cuDNN autotuning; on CUDA, resuming then gives
    the numbers of an uninterrupted run wherever each kernel has a deterministic version. Otherwise cuDNN
    autotunes each convolution once per input shape (cudnn.benchmark), which pays because training and
    evaluation batches have fixed shapes; the kernels it picks, and so the last bits, may differ from run to run.
    On the CPU every kernel is deterministic either way.

    On CUDA, float32 matmuls run on TF32 tensor cores where the GPU has them (compute capability >= 8.0;
    float32_matmul_precision "high"), as cuDNN's float32 convolutions already do by torch's default
    (cudnn.allow_tf32): inputs rounded to a 10-bit mantissa, float32 range and accumulation. It is part of what
    the device does to float32 (evaluation, --amp off, the matmuls autocast leaves in float32), like the kernel
    choices of schema.KERNEL_ARGS it changes rounding only, and it is deterministic: no flag, nothing hashed;
    args.json's device and library versions say which GPU and torch ran it.
    """
    if deterministic:
        # Read when cuBLAS creates its handle: set before the first matmul on the device.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    on_cuda = torch.device(device).type == "cuda"
    torch.backends.cudnn.benchmark = on_cuda and not deterministic
    configure_float32(device)


def configure_float32(device):
    """Float32 matmuls on `device`: TF32 on CUDA (see configure_kernels), exact on the CPU. Every study sets it
    when it picks its device, so evaluation-only runs (the bicubic floor, --epochs 0, quantize's fp32) round as
    the evaluation after training does."""
    torch.set_float32_matmul_precision("high" if torch.device(device).type == "cuda" else "highest")


def amp_context(device, amp):
    """Autocast context for `amp` in {'bf16','fp16','off'}; a no-op context for 'off'."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_scaler(device, amp):
    """GradScaler that is active only under fp16 (bf16 and fp32 need no loss scaling) and always called."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))
