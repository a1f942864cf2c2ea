"""The training losses of Xu & Klabjan §3 ("V2LS" and "V2VS"), on torch tensors.

``L1 = mean_n [ sum_t KL(Y_t^T || Y_t^P) / K + alpha · KL(Y^GT || Y^P) ]`` (:func:`label_loss`),
``L2 = mean_n sum_t ||X_t^P − X_t^T||²`` (:func:`vector_loss`) and the model's combination
(:func:`combined_loss`: L1, L2 or L1 + lam · L2).
"""

from __future__ import annotations

from typing import Any

def kl_divergence(target: Any, pred: Any, eps: float = 1e-12) -> Any:
    """``KL(target || pred) = sum_c target_c (log target_c − log pred_c)`` over the last axis (0 log 0 = 0).

    Parameters
    ----------
    target, pred : torch tensors [..., C] of probabilities.

    Returns
    -------
    torch tensor [...]
    """
    import torch

    t = target.clamp_min(0.0)
    logt = torch.where(t > 0, torch.log(t.clamp_min(eps)), torch.zeros_like(t))
    return (t * (logt - torch.log(pred.clamp_min(eps)))).sum(-1)


def _as_dist(labels_or_probs: Any, n_classes: int) -> Any:
    import torch

    if labels_or_probs.dtype in (torch.int64, torch.int32, torch.long):
        return torch.nn.functional.one_hot(labels_or_probs.long(), n_classes).to(torch.float32)
    return labels_or_probs


def label_loss(step_probs: Any, neighbor_targets: Any, ground_truth: Any, alpha: float = 9.5) -> Any:
    """L1 of the paper (V2LS, MNkNN), averaged over the batch.

    ``L1 = mean_n [ sum_t KL(Y_t^T || Y_t^P) / K + alpha · KL(Y^GT || Y^P) ]``, ``Y^P = mean_t Y_t^P``.

    Parameters
    ----------
    step_probs : float tensor [n, K, C]   ``Y_t^P`` (rows sum to 1)
    neighbor_targets : int64 [n, K] labels or float [n, K, C] distributions   ``Y_t^T``
    ground_truth : int64 [n] labels or float [n, C]   ``Y^GT``
    alpha : float, default 9.5

    Returns
    -------
    scalar tensor
    """
    n, K, C = step_probs.shape
    yt = _as_dist(neighbor_targets, C)
    gt = _as_dist(ground_truth, C)
    per_step = kl_divergence(yt, step_probs).sum(1) / K
    final = kl_divergence(gt, step_probs.mean(1))
    return (per_step + alpha * final).mean()


def vector_loss(step_vectors: Any, neighbor_vectors: Any) -> Any:
    """L2 of the paper (V2VS): ``mean_n sum_t ||X_t^P − X_t^T||²`` for tensors [n, K, D]."""
    return ((step_vectors - neighbor_vectors) ** 2).sum(-1).sum(-1).mean()


def combined_loss(out: dict[str, Any], y_nb: Any, x_nb: Any, y: Any, *, alpha: float, lam: float) -> Any:
    """The model's training loss: L1 (label models), L2 (V2VS) or L1 + lam·L2 (V2VSLS, MNkNN_VEC)."""
    loss = None
    if "step_probs" in out:
        loss = label_loss(out["step_probs"], y_nb, y, alpha)
    if "step_vectors" in out:
        l2 = vector_loss(out["step_vectors"], x_nb)
        loss = l2 if loss is None else loss + lam * l2
    return loss
