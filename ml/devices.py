"""Which device a training job runs on, and what it needs there (checked before Ray starts).

On CUDA the TorchRec fused path needs the CUDA build of `fbgemm-gpu` (the `fbgemm-gpu-cpu`
wheel this project pins for the CPU has no CUDA kernels). Where it cannot be had, the job trains
the plain-PyTorch model (`backend="reference"`, `fused=False`; several workers: DDP) on the GPU
through the same loop: `for_gpu`. Not verified on a GPU here (this machine has none).
"""

from __future__ import annotations

import dataclasses

import torch

from ml.training_job import TrainingJob


class DeviceUnavailableError(RuntimeError):
    """The requested device (or the library its kernels need) is not on this machine."""


def cuda_fbgemm_available() -> bool:
    """True when FBGEMM's CUDA kernels run here: a CUDA device and the CUDA `fbgemm-gpu`."""
    if not torch.cuda.is_available():
        return False
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

        ones = torch.ones(2, dtype=torch.int64, device="cuda")
        torch.ops.fbgemm.asynchronous_complete_cumsum(ones)
    except Exception:  # not installed, or the CPU build: no CUDA kernel registered
        return False
    return True


def require_cuda(job: TrainingJob) -> None:
    """Raise DeviceUnavailableError naming what is missing when no CUDA device is visible."""
    if torch.cuda.is_available():
        return
    built = torch.version.cuda
    need = ("; the TorchRec fused path (train.fused=True) also needs the CUDA build of "
            "fbgemm-gpu (the pinned fbgemm-gpu-cpu has no CUDA kernels)") if job.train.fused else ""
    raise DeviceUnavailableError(
        "use_gpu=True: no CUDA device is visible to torch (torch.cuda.is_available() is False; "
        f"torch {torch.__version__} built {'with CUDA ' + built if built else 'without CUDA'})"
        f"{need}. Train on the CPU (use_gpu=False) or on a machine with an NVIDIA GPU.")


def for_gpu(job: TrainingJob) -> TrainingJob:
    """`job` as it trains on this GPU: unchanged with FBGEMM's CUDA kernels, else the
    plain-PyTorch model (TorchRec's modules call FBGEMM ops too) without the fused kernel."""
    if job.backend == "reference" or cuda_fbgemm_available():
        return job
    return dataclasses.replace(job, backend="reference",
                               train=dataclasses.replace(job.train, fused=False))


__all__ = ["DeviceUnavailableError", "cuda_fbgemm_available", "for_gpu", "require_cuda"]
