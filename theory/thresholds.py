r"""Linear-stability thresholds of GD, heavy-ball, Nesterov and Adam (frozen preconditioner).

On a quadratic (or at a minimum, to first order) every rule decouples along the
eigenvectors of the Hessian H (for Adam, of P⁻¹H with the preconditioner P frozen).
On one mode with curvature λ the map on (θ, buffer) is a 2×2 matrix J, written here
exactly as ``rule.jacobian`` / ``Adam.frozen_jacobian`` write it in eosdyn:

    GD         J = 1 − ηλ
    heavy-ball J = [[1 − ηλ, −ηβ], [λ, β]]              b ← βb + g, θ ← θ − ηb
    Nesterov   J = [[1 − η(1+β)λ, −ηβ²], [λ, β]]         b ← βb + g, θ ← θ − η(g + βb)
    Adam       J = [[1 − η(1−β₁)a, −ηβ₁], [(1−β₁)a, β₁]]  a = eigenvalue of P⁻¹H, in (θ, P⁻¹m)

For the characteristic polynomial μ² + a₁μ + a₀, both roots lie in the unit disc iff
(Jury's criterion; Elaydi, *An Introduction to Difference Equations*, 3rd ed., Thm 5.1)

    |a₀| < 1,   1 + a₁ + a₀ > 0,   1 − a₁ + a₀ > 0.

For all four rules 1 + a₁ + a₀ is a positive multiple of ηλ (no μ = +1 crossing for
η > 0) and |a₀| < 1 at the threshold; the binding condition is the μ = −1 crossing
1 − a₁ + a₀ = 0 (a flip), whose root in η is the threshold:

    GD 2/λ;   heavy-ball 2(1+β)/λ (Polyak 1964);   Nesterov (2+2β)/((1+2β)λ);
    Adam (2+2β₁)/((1−β₁)a)  (Cohen et al. 2022, "Adaptive gradient methods at the edge of
    stability", §3, with a = λ_max(P⁻¹H), the preconditioned sharpness).

Run ``python -m theory.thresholds`` to print the derivation.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

eta, lam, beta, beta1, a, mu = sp.symbols("eta lambda beta beta1 a mu", positive=True)


def mode_jacobians():
    """The per-mode Jacobians (sympy matrices) of the four rules."""
    return {
        "gd": sp.Matrix([[1 - eta * lam]]),
        "heavyball": sp.Matrix([[1 - eta * lam, -eta * beta], [lam, beta]]),
        "nesterov": sp.Matrix([[1 - eta * (1 + beta) * lam, -eta * beta**2], [lam, beta]]),
        "adam": sp.Matrix([[1 - eta * (1 - beta1) * a, -eta * beta1], [(1 - beta1) * a, beta1]]),
    }


@lru_cache(maxsize=None)
def derive():
    """Dict rule -> {'charpoly', 'jury', 'threshold'} (sympy), the threshold solved from μ = −1."""
    out = {}
    for name, J in mode_jacobians().items():
        n = J.shape[0]
        p = sp.expand((mu * sp.eye(n) - J).det())
        at_minus1 = sp.simplify(p.subs(mu, -1))
        sol = sp.solve(sp.Eq(at_minus1, 0), eta)
        if len(sol) != 1:
            raise RuntimeError(f"{name}: expected one root in eta, got {sol}")
        thr = sp.simplify(sol[0])
        poly = sp.Poly(p, mu)
        coeffs = poly.all_coeffs()  # leading first
        if n == 2:
            a1, a0 = coeffs[1], coeffs[2]
            jury = {"|a0| < 1": sp.simplify(a0), "1 + a1 + a0 > 0": sp.factor(1 + a1 + a0),
                    "1 - a1 + a0 > 0": sp.factor(1 - a1 + a0)}
        else:
            a0 = coeffs[1]
            jury = {"1 + a0 > 0": sp.factor(1 + a0), "1 - a0 > 0": sp.factor(1 - a0)}
        a0_at = sp.simplify(coeffs[-1].subs(eta, thr)) if n == 2 else None
        out[name] = {"charpoly": p, "jury": jury, "threshold": thr, "a0_at_threshold": a0_at}
    return out


def _fn(name, *args):
    return sp.lambdify(args, derive()[name]["threshold"], "math")


def gd_threshold(lam_):
    """2/λ, from the sympy derivation."""
    return _fn("gd", lam)(lam_)


def heavyball_threshold(lam_, beta_):
    """2(1+β)/λ, from the sympy derivation."""
    return _fn("heavyball", lam, beta)(lam_, beta_)


def nesterov_threshold(lam_, beta_):
    """(2+2β)/((1+2β)λ), from the sympy derivation."""
    return _fn("nesterov", lam, beta)(lam_, beta_)


def adam_threshold(a_, beta1_):
    """(2+2β₁)/((1−β₁)a) with a = λ_max(P⁻¹H), from the sympy derivation."""
    return _fn("adam", a, beta1)(a_, beta1_)


CLOSED_FORMS = {
    "gd": 2 / lam,
    "heavyball": 2 * (1 + beta) / lam,
    "nesterov": (2 + 2 * beta) / ((1 + 2 * beta) * lam),
    "adam": (2 + 2 * beta1) / ((1 - beta1) * a),
}


def main():
    for name, d in derive().items():
        print(f"== {name}")
        print("  characteristic polynomial:", d["charpoly"])
        for cond, expr in d["jury"].items():
            print(f"  Jury {cond}:  {expr}")
        print("  threshold (mu = -1):", d["threshold"])
        if d["a0_at_threshold"] is not None:
            print("  a0 at the threshold (|a0| < 1 for 0 <= beta < 1):", d["a0_at_threshold"])
        print("  equals the closed form:", sp.simplify(d["threshold"] - CLOSED_FORMS[name]) == 0)


if __name__ == "__main__":
    main()
