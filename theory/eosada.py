r"""EoS-Ada's effective step on the top Hessian mode and its edge of stability.

EoS-Ada (the project's proposal; eosdyn.rules.EoSAda, schedule in
eosdyn.rules.schedules.eosada_lr) takes the step η_t = α/(λ_max + ε) with the current
top Hessian eigenvalue λ_max. At a minimum with Hessian eigenvalues λ_1 = λ ≥ λ_i the
map θ ↦ θ − η_t∇L(θ) has the Jacobian I − η_t H (the derivative of η_t multiplies
∇L = 0), so mode i is multiplied by 1 − αλ_i/(λ + ε). The effective step on the top
mode is

    η_t λ = α λ/(λ + ε)  < α,

and the top mode reaches the GD edge η_t λ = 2 (multiplier −1) at

    α* = 2 (λ + ε)/λ = 2 (1 + ε/λ).

(The lower modes have smaller effective steps, so the top one binds.) With ε = 0 the
rule sits at ηλ = α exactly: α < 2 is the edge of stability of GD, independent of the
curvature — the point of the rule. Run ``python -m theory.eosada`` to print it.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

alpha, eps, lam, lam_i = sp.symbols("alpha epsilon lambda lambda_i", positive=True)


@lru_cache(maxsize=None)
def derive():
    eta_t = alpha / (lam + eps)
    effective = sp.simplify(eta_t * lam)
    multiplier = 1 - effective
    sol = sp.solve(sp.Eq(multiplier, -1), alpha)
    if len(sol) != 1:
        raise RuntimeError(f"expected one edge, got {sol}")
    edge = sp.simplify(sol[0])
    return {"step": eta_t, "effective_step": effective, "top_multiplier": multiplier,
            "edge": edge, "mode_multiplier": 1 - eta_t * lam_i}


def effective_step(alpha_, lam_, eps_):
    """η_t λ = αλ/(λ+ε)."""
    return sp.lambdify((alpha, lam, eps), derive()["effective_step"], "math")(alpha_, lam_, eps_)


def edge_alpha(lam_, eps_):
    """α* = 2(1 + ε/λ)."""
    return sp.lambdify((lam, eps), derive()["edge"], "math")(lam_, eps_)


def main():
    d = derive()
    print("step size             eta_t =", d["step"])
    print("effective step        eta_t*lambda =", d["effective_step"])
    print("top-mode multiplier   ", d["top_multiplier"])
    print("edge (multiplier -1)  alpha* =", d["edge"], "=", sp.expand(d["edge"]))
    print("equals 2(1 + eps/lambda):", sp.simplify(d["edge"] - 2 * (1 + eps / lam)) == 0)


if __name__ == "__main__":
    main()
