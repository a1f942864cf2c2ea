"""Adversarial examples: FGSM and PGD (L∞), untargeted, in torch.

Perturbations live in input pixel units: images in ``[0, 1]`` *before* normalisation; ``eps``
bounds the L∞ norm of the change (e.g. 0.25 = a quarter of the pixel range, the DkNN paper's
FGSM setting on MNIST) and the result is clipped back to ``[0, 1]``. The loss is the
cross-entropy against the given labels (``embed`` passes the true labels).

FGSM (Goodfellow et al. 2014): ``x' = clip(x + eps · sign(∇x L(f(x), y)), 0, 1)``.
PGD (Madry et al. 2018): random start uniform in the eps-ball (``random_start``), then ``steps``
iterations of ``x ← Π(x + step_size · sign(∇x L))`` projecting onto the eps-ball around x and
onto [0, 1]; the default step size is 2.5·eps/steps.
"""

from __future__ import annotations

from typing import Any, Callable

ATTACKS = ("none", "fgsm", "pgd")


def _grad_sign(forward: Callable[[Any], Any], x: Any, y: Any) -> Any:
    import torch
    import torch.nn.functional as F

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(forward(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(forward: Callable[[Any], Any], x: Any, y: Any, eps: float, *, clip: tuple[float, float] | None = (0.0, 1.0)) -> Any:
    """Fast Gradient Sign Method.

    Parameters
    ----------
    forward : callable(x) -> logits   the model including its input normalisation
    x : torch.Tensor [B, ...]          clean inputs in [0, 1]
    y : torch.Tensor int64 [B]         labels whose loss is increased
    eps : float                        L∞ budget in input units (>= 0)
    clip : (low, high) or None         valid input range

    Returns
    -------
    torch.Tensor like ``x`` (detached).
    """
    import torch

    x_adv = x.detach() + float(eps) * _grad_sign(forward, x, y)
    if clip is not None:
        x_adv = torch.clamp(x_adv, clip[0], clip[1])
    return x_adv.detach()


def pgd(
    forward: Callable[[Any], Any],
    x: Any,
    y: Any,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: Any = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> Any:
    """Projected Gradient Descent (L∞, untargeted).

    Parameters
    ----------
    forward, x, y, eps, clip : see :func:`fgsm`
    steps : int, default 10
    step_size : float, optional        default 2.5·eps/steps
    random_start : bool, default True  start from a uniform point of the eps-ball
    generator : torch.Generator, optional   randomness of the start (CPU)

    Returns
    -------
    torch.Tensor like ``x`` with ``|x' - x|_∞ <= eps`` and values inside ``clip``.
    """
    import torch

    eps = float(eps)
    alpha = float(step_size) if step_size is not None else 2.5 * eps / max(int(steps), 1)
    x0 = x.detach()
    x_adv = x0.clone()
    if random_start and eps > 0:
        noise = (torch.rand(x0.shape, generator=generator) * 2 - 1).to(x0.device, x0.dtype) * eps
        x_adv = x0 + noise
        if clip is not None:
            x_adv = torch.clamp(x_adv, clip[0], clip[1])
    for _ in range(int(steps)):
        x_adv = x_adv + alpha * _grad_sign(forward, x_adv, y)
        x_adv = torch.max(torch.min(x_adv, x0 + eps), x0 - eps)
        if clip is not None:
            x_adv = torch.clamp(x_adv, clip[0], clip[1])
    return x_adv.detach()


def perturb(forward: Callable[[Any], Any], x: Any, y: Any, attack: str, *, eps: float, steps: int = 10,
            step_size: float | None = None, random_start: bool = True, generator: Any = None,
            clip: tuple[float, float] | None = (0.0, 1.0)) -> Any:
    """Dispatch on ``attack`` ∈ :data:`ATTACKS` (``"none"`` returns ``x`` unchanged)."""
    if attack == "none":
        return x
    if attack == "fgsm":
        return fgsm(forward, x, y, eps, clip=clip)
    if attack == "pgd":
        return pgd(forward, x, y, eps, steps=steps, step_size=step_size, random_start=random_start, generator=generator, clip=clip)
    raise ValueError(f"attack {attack!r}; expected one of {ATTACKS}")
