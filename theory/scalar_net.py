r"""Sharpness along the minimum manifold of the depth-D scalar network ½(w₁⋯w_D − y)².

With p = ∏wᵢ and qᵢ = ∂p/∂wᵢ = ∏_{j≠i} w_j, ∇²L = q qᵀ + (p − y)·∂²p, so on the manifold
p = y the Hessian is the rank-one matrix q qᵀ and its sharpness is

    λ_max = ‖q‖² = Σᵢ ∏_{j≠i} w_j² = Σᵢ y²/wᵢ².

Minimising over the manifold (Lagrange, or AM–GM: Σᵢ y²/wᵢ² ≥ D (∏ᵢ y²/wᵢ²)^{1/D} =
D (y^{2D}/y²)^{1/D}) gives the balanced point |wᵢ| = |y|^{1/D} and

    min_M λ_max = D |y|^{2(D−1)/D},      η* = 2 / (D |y|^{2(D−1)/D}),

the critical step size of Crăciun & Ghoshdastidar (2024, arXiv:2402.13108) for this
network: above η* no minimum is linearly stable under GD. This module verifies the
rank-one Hessian and the minimum symbolically for D = 2, 3, 4 (solving the
stationarity equations of Σᵢ y²/wᵢ² on the chart w_D = y/∏_{i<D} wᵢ, positive
branch). Run ``python -m theory.scalar_net``.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

yv = sp.symbols("y", positive=True)


@lru_cache(maxsize=None)
def derive(D: int):
    w = sp.symbols(f"w1:{D + 1}", positive=True)
    p = sp.Mul(*w)
    L = (p - yv) ** 2 / 2
    H = sp.hessian(L, w)
    q = sp.Matrix([sp.diff(p, wi) for wi in w])
    # on the manifold: substitute w_D = y / prod(w_1..w_{D-1})
    on = {w[-1]: yv / sp.Mul(*w[:-1])}
    rank_one = sp.simplify((H - q * q.T).subs(on)) == sp.zeros(D, D)
    sharp = sp.simplify((q.T * q)[0, 0].subs(on))
    crit = sp.solve([sp.diff(sharp, wi) for wi in w[:-1]], list(w[:-1]), dict=True)
    vals = [sp.simplify(sharp.subs(c)) for c in crit]
    if len(vals) != 1:
        raise RuntimeError(f"D={D}: expected one critical point on the positive branch, got {crit}")
    return {"manifold_sharpness": sharp, "rank_one_on_manifold": rank_one, "minimiser": crit[0],
            "min_sharpness": sp.simplify(vals[0])}


def closed_form(D):
    """D·y^{2(D−1)/D} as a sympy expression."""
    return D * yv ** sp.Rational(2 * (D - 1), D)


def min_sharpness(D, y):
    """D·|y|^{2(D−1)/D} from the derivation (D = 2, 3, 4) or the closed form (other D)."""
    expr = derive(D)["min_sharpness"] if D in (2, 3, 4) else closed_form(D)
    return float(expr.subs(yv, abs(y)))


def critical_lr(D, y):
    """η* = 2/min_M λ_max."""
    return 2.0 / min_sharpness(D, y)


def main():
    for D in (2, 3, 4):
        d = derive(D)
        print(f"== D = {D}")
        print("  Hessian = q q^T on the manifold:", d["rank_one_on_manifold"])
        print("  sharpness on the manifold (w_D eliminated):", d["manifold_sharpness"])
        print("  stationary point:", d["minimiser"])
        print("  minimum sharpness:", d["min_sharpness"], " closed form D*y^(2(D-1)/D):",
              sp.simplify(d["min_sharpness"] - closed_form(D)) == 0)


if __name__ == "__main__":
    main()
