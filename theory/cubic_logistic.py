r"""GD on the cubic f(x) = x²/2 − x³/3 is the logistic map: its 2-cycle and period doublings.

f'(x) = x − x², so one GD step is g(x) = x − η(x − x²) = (1 − η)x + ηx².

**Conjugacy.** With x = a·y + b, g becomes y ↦ r y(1 − y) iff the coefficients of y⁰,
y¹, y² match; solving gives a = −(1+η)/η, b = 1 and r = 1 + η (May, Nature 261,
1976, for the logistic map; the conjugacy is elementary). The minimum x = 0 is the
logistic fixed point y = 1 − 1/r, with multiplier g'(0) = 1 − η = 2 − r.

**2-cycle.** g(g(x)) − x = 0 contains the fixed points x = 0 and x = 1 as factors;
the remaining quadratic gives the 2-cycle

    x± = [(η − 2) ± √((η − 2)(η + 2))] / (2η),

real for η > 2 (r > 3): the 2-cycle is born at η = 2, the edge of stability of the
minimum (its sharpness is f''(0) = 1, and 2/1 = 2). Its multiplier is

    g'(x+) g'(x−) = 5 − η² = −r² + 2r + 4      (r = 1 + η),

which equals +1 at the birth (r = 3) and −1 at r = 1 + √6 (η = √6 ≈ 2.449): the
second period doubling. (Standard logistic-map results: e.g. Strogatz, *Nonlinear
Dynamics and Chaos*, §10.3.) Run ``python -m theory.cubic_logistic``.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

x, y, eta, a, b, r = sp.symbols("x y eta a b r", real=True)


def gd_map(z):
    return z - eta * (z - z**2)


@lru_cache(maxsize=None)
def derive():
    # conjugacy x = a y + b: g(a y + b) == a * r y (1 - y) + b, with r = 1 + eta
    lhs = sp.expand(gd_map(a * y + b))
    rhs = sp.expand(a * (1 + eta) * y * (1 - y) + b)
    eqs = sp.Poly(lhs - rhs, y).all_coeffs()
    sols = sp.solve(eqs, [a, b], dict=True)
    conj = [s for s in sols if s[a] != 0]
    if len(conj) != 1:
        raise RuntimeError(f"expected one non-degenerate conjugacy, got {sols}")
    conj = conj[0]
    # period 2: divide g(g(x)) - x by the fixed-point factors x (x - 1)
    gg = sp.expand(gd_map(gd_map(x)) - x)
    q, rem = sp.div(gg, sp.expand(x * (x - 1)), x)
    if rem != 0:
        raise RuntimeError("x(x-1) does not divide g(g(x)) - x")
    cyc = sp.solve(sp.Eq(q, 0), x)
    cyc = sorted(cyc, key=lambda e: float(e.subs(eta, 3)))  # (x−, x+)
    gp = sp.diff(gd_map(x), x)
    mult = sp.simplify(sp.expand(gp.subs(x, cyc[0]) * gp.subs(x, cyc[1])))
    mult_r = sp.expand(mult.subs(eta, r - 1))
    disc = sp.factor(sp.discriminant(q, x))
    born = [s for s in sp.solve(sp.Eq(mult, 1), eta) if s.is_positive]
    doubles = [s for s in sp.solve(sp.Eq(mult, -1), eta) if s.is_positive]
    return {"a": conj[a], "b": conj[b], "cycle_quadratic": sp.factor(q), "cycle": cyc, "discriminant": disc,
            "multiplier": mult, "multiplier_r": mult_r, "birth_eta": born, "doubling_eta": doubles}


def period2_orbit(eta_):
    """(x_low, x_high), the 2-cycle of GD with step η > 2."""
    d = derive()
    lo, hi = (float(e.subs(eta, eta_)) for e in d["cycle"])
    return (min(lo, hi), max(lo, hi))


def period2_multiplier(eta_):
    """g'(x+)g'(x−) = −r² + 2r + 4 with r = 1 + η."""
    return float(derive()["multiplier"].subs(eta, eta_))


def first_doubling_eta():
    """η at which the minimum x = 0 doubles (the 2-cycle is born): 2 (r = 3)."""
    (v,) = derive()["birth_eta"]
    return float(v)


def second_doubling_eta():
    """η at which the 2-cycle doubles: √6 (r = 1 + √6)."""
    (v,) = derive()["doubling_eta"]
    return float(v)


def main():
    d = derive()
    print("conjugacy x = a*y + b with  a =", d["a"], ", b =", d["b"], ", r = 1 + eta")
    print("2-cycle quadratic:", d["cycle_quadratic"], "  discriminant:", d["discriminant"])
    print("2-cycle points:", d["cycle"])
    print("2-cycle multiplier:", d["multiplier"], "  = in r:", d["multiplier_r"])
    print("born (multiplier +1) at eta =", d["birth_eta"], " i.e. r =", [1 + v for v in d["birth_eta"]])
    print("doubles (multiplier -1) at eta =", d["doubling_eta"], " i.e. r =",
          [sp.simplify(1 + v) for v in d["doubling_eta"]])


if __name__ == "__main__":
    main()
