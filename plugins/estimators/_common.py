"""Shared helpers for the built-in estimators: torch device, float64 tensors, class sums.

Everything here imports torch lazily so that importing an estimator module stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autotransfer.errors import EstimatorError


def torch_device(device: Any):
    """``device`` as a ``torch.device``; a clear error when CUDA is asked for but absent."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EstimatorError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
    return dev


def as_tensor(x: Any, device: Any, dtype: Any = None):
    """``x`` (array or tensor) on ``device`` as ``dtype`` (float64 by default), without a copy when possible."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device=torch_device(device), dtype=dtype)


def as_labels(labels: Any, device: Any):
    """1-D class labels as an int64 tensor of codes 0..C-1 (every code used) and the number of classes C."""
    import torch

    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    classes, codes = np.unique(y, return_inverse=True)
    codes = torch.from_numpy(codes.reshape(-1).astype(np.int64)).to(torch_device(device))
    return codes, len(classes)


def class_sums(x, y, num_classes: int):
    """Row sums of ``x`` (N, D) per class, shape (C, D): ``one_hot(y).T @ x``.

    A scatter-add costs O(N·D) whatever C is; with few classes the dense product is faster.
    """
    if num_classes <= 16:
        one_hot = x.new_zeros((len(y), num_classes)).scatter_(1, y[:, None], 1.0)
        return one_hot.T @ x
    return x.new_zeros((num_classes, x.shape[1])).index_add_(0, y, x)


def gram_eigh(x):
    """Eigendecomposition of the smaller Gram matrix of ``x`` (N, D).

    Returns ``(evals, evecs, side)``: ``side == "feature"`` means ``x.T @ x = V diag(s) V.T``
    (D×D, used when N >= D); ``side == "sample"`` means ``x @ x.T = U diag(s) U.T`` (N×N).
    Both share the nonzero eigenvalues. Eigenvalues are clamped at 0, ascending.
    """
    import torch

    n, d = x.shape
    if n >= d:
        evals, evecs = torch.linalg.eigh(x.T @ x)
        side = "feature"
    else:
        evals, evecs = torch.linalg.eigh(x @ x.T)
        side = "sample"
    return evals.clamp_(min=0.0), evecs, side


def nonzero_mask(evals, n: int, d: int):
    """Eigenvalues of a Gram matrix that are numerically nonzero (the matrix rank rule of numpy)."""
    tol = evals.max() * max(n, d) * float(np.finfo(np.float64).eps)
    return evals > tol
