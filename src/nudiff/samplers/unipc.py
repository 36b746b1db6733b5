"""UniPC (Zhao et al. 2023): a multistep predictor and a corrector that costs no extra model
call, per component.

Both update ``u_s = (sigma_s / sigma_t) u_t + alpha_s (1 - e^-h) m0 + alpha_s B(h) sum_k rho_k
D_k`` in data prediction, where ``h = psi_s - psi_t`` is the component's step in half log-SNR,
``m0 = x0(u_t, t)``, and ``D_k = (m_k - m0) / r_k`` are differences to earlier estimates at
``r_k = (psi_k - psi_t) / h`` (negative). The weights ``rho`` solve ``sum_k rho_k r_k^(j-1) =
b_j(h)``, the ``phi``-function moments of the exact integral divided by ``B(h)``: ``B(h) = h``
(``bh1``) or ``1 - e^-h`` (``bh2``). The predictor of order ``p`` uses ``p - 1`` earlier
estimates; the corrector (UniC) then reuses the model call at the predicted point, which the
next step needs anyway, as one more node at ``r = 1``, raising the order by one.

Every component has its own ``h`` and ``r_k``, so its weights are its own (closed-form
Lagrange weights for up to three nodes). A component frozen in a step (``h = 0``), or whose
earlier steps were shorter than :data:`~nudiff.samplers.exponential._MIN_RATIO` of this one,
falls back to a lower order on its own, as in the DPM-Solver++ samplers.
"""

from __future__ import annotations

import math

import torch

from nudiff.process import Process
from nudiff.samplers.base import check_grid, emit, steps_iter
from nudiff.samplers.exponential import _MIN_RATIO, _coefficients, first_order_step

VARIANTS = ("bh1", "bh2")


def _b_coefficients(h: torch.Tensor, order: int, variant: str):
    """``B(h)`` and UniPC's ``b_1..b_order`` per component (float64; meaningless where ``h``
    is 0 or not finite: the caller masks those)."""
    hh = -h  # data prediction integrates in -psi
    h_phi_1 = torch.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    b, factorial = [], 1
    for j in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return b_h, b


def _lagrange_weights(nodes: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    """``rho`` with ``sum_k rho_k nodes_k^j = b_(j+1)``, ``j < len(nodes) <= 3``: a transposed
    Vandermonde system, solved by the coefficients of the Lagrange basis polynomials."""
    if len(nodes) == 1:
        return [b[0]]
    rho = []
    for k, x in enumerate(nodes):
        others = [y for j, y in enumerate(nodes) if j != k]
        den = math.prod(x - y for y in others)
        if len(others) == 1:
            num = b[1] - others[0] * b[0]
        else:
            y, z = others
            num = b[2] - (y + z) * b[1] + y * z * b[0]
        rho.append(num / den)
    return rho


def _orders(history, h: torch.Tensor, order: int) -> torch.Tensor:
    """The order each component can take this step: 1 plus its usable earlier estimates."""
    ok = torch.isfinite(h) & (h > 0)
    usable = torch.zeros_like(h, dtype=torch.long)
    for _, h_k in reversed(history[-(order - 1) :] if order > 1 else []):
        ok = ok & torch.isfinite(h_k) & (h_k > _MIN_RATIO * h)
        usable = usable + ok.long()
    return torch.where(torch.isfinite(h) & (h > 0), 1 + usable, 0)


def _update(u, x0, history, coeffs, p: int, variant: str, m_new=None):
    """The order-``p`` predictor (``m_new`` None) or corrector (``m_new``: the estimate at the
    predicted point) from ``u_t``, as ``(u_s, valid)``; ``history``: earlier ``(x0, h)``,
    newest last; ``coeffs``: the step's ``alpha_s, sigma_s, sigma_t, h``."""
    alpha_s, sigma_s, sigma_t, h = coeffs
    base = first_order_step(u, x0, alpha_s, sigma_s, sigma_t, h)
    n_nodes = p if m_new is not None else p - 1
    if n_nodes == 0:
        return base
    b_h, b = _b_coefficients(h, p, variant)
    # earlier estimates at r_k = -(h_1 + ... + h_k) / h, newest first
    nodes, diffs, back = [], [], torch.zeros_like(h)
    for m_k, h_k in reversed(history[-(p - 1) :] if p > 1 else []):
        back = back + h_k
        r = -back / h
        nodes.append(r)
        diffs.append((m_k, r))
    if m_new is not None:
        nodes.append(torch.ones_like(h))
    if m_new is None and p == 2:
        rho = [torch.full_like(h, 0.5)]  # UniPC's predictor of order 2
    elif m_new is not None and p == 1:
        rho = [torch.full_like(h, 0.5)]  # and its corrector of order 1
    else:
        rho = _lagrange_weights(nodes, b)
    scale = -alpha_s * b_h  # B(h) of -psi: the update's sign
    out = base
    for w, (m_k, r) in zip(rho, diffs, strict=False):
        out = out + (scale * w / r).to(u) * (m_k - x0)
    if m_new is not None:
        out = out + (scale * rho[-1]).to(u) * (m_new - x0)
    return out


@torch.inference_mode()
def sample_unipc(
    model,
    process: Process,
    u,
    ts,
    *,
    noise=None,
    callback=None,
    progress=False,
    denoise_final=True,
    order: int = 3,
    variant: str = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
):
    """UniPC-``order`` (1-3) with ``variant`` ``bh1`` or ``bh2``, 1 NFE per step. The
    corrector (UniC) refines each step with the model call at its end (none after the last
    step, which has no such call). ``lower_order_final``: below 15 steps, the last steps use
    at most as many earlier estimates as steps remain, as diffusers does."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    ts = check_grid(ts).to(u)
    n_steps = len(ts) - 1
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x0, h of the step it began)
    step = None  # the last step: (u_t, x0_t, its history, coefficients, order map)
    for i, (t, s) in enumerate(steps_iter(ts, progress, "unipc")):
        x0 = model(u, t)
        if corrector and step is not None:
            u = _correct(u, x0, *step, variant)
        alpha_s, sigma_s, _, sigma_t, h = _coefficients(process, t, s, u)
        p = order
        if lower_order_final and n_steps < 15:
            p = min(p, n_steps - i)
        orders = _orders(history, h, p)
        coeffs = (alpha_s, sigma_s, sigma_t, h)
        u_next = _by_order(u, x0, history, coeffs, orders, p, variant)
        step = (u, x0, list(history), coeffs, orders, p)
        history = [*history[-(order - 1) :], (x0, h)] if order > 1 else [(x0, h)]
        u = u_next
        emit(callback, i, t, u, x0)
    return model(u, ts[-1]) if denoise_final else u


def _by_order(u, x0, history, coeffs, orders, p: int, variant: str, m_new=None):
    """Each component's update at its own order (``orders``: 0 for a frozen component, which
    keeps the first-order step, an identity there)."""
    out = _update(u, x0, history, coeffs, 1, variant, m_new)
    for k in range(2, p + 1):  # every order for every component: no host sync to skip one
        higher = _update(u, x0, history, coeffs, k, variant, m_new)
        out = torch.where((orders >= k).to(u.device), higher, out)
    return out


def _correct(u_pred, m_new, u_t, x0_t, history, coeffs, orders, p: int, variant: str):
    """UniC: the last step redone from ``u_t`` with ``m_new = x0(u_pred, s)`` as one more node.
    A component that did not move (order 0) keeps ``u_pred``."""
    out = _by_order(u_t, x0_t, history, coeffs, orders, p, variant, m_new)
    return torch.where((orders > 0).to(u_pred.device), out, u_pred)
