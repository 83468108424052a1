"""Curvature estimators over a matrix-vector product, for numpy and torch vectors alike.

- :func:`top_eigenpairs` — extreme eigenpairs by thick-restart Lanczos, shifted
  power/subspace iteration, or dense ``eigh`` (:class:`EigenResult`);
- :func:`hutchinson_trace` — stochastic trace estimate (:class:`HutchinsonResult`);
- :func:`hutchpp_trace` — Hutch++ trace estimate, O(1/m) error (:class:`HutchPPResult`);
- :func:`spectral_density` — stochastic Lanczos quadrature (:class:`SpectralDensity`);
- :func:`dense_operator`, :func:`hessian_operator` (an eosdyn Loss at θ),
  :func:`preconditioned` (P^(-1/2) H P^(-1/2) for a diagonal P > 0: its eigenvalues are
  those of P⁻¹H), :func:`check_symmetric` — operators and checks.

Every routine takes ``matvec`` (v -> A v, A symmetric) and ``dim``; the vectors stay
in the caller's namespace, dtype and device, chosen by ``v0`` or ``like=``.
"""
from .density import SpectralDensity, spectral_density
from .eigen import EigenResult, top_eigenpairs
from .operators import (
                        DenseOperator,
                        PreconditionedOperator,
                        check_symmetric,
                        dense_operator,
                        hessian_operator,
                        preconditioned,
)
from .trace import HutchinsonResult, HutchPPResult, hutchinson_trace, hutchpp_trace

__all__ = [
    "top_eigenpairs",
    "EigenResult",
    "hutchinson_trace",
    "HutchinsonResult",
    "hutchpp_trace",
    "HutchPPResult",
    "spectral_density",
    "SpectralDensity",
    "dense_operator",
    "DenseOperator",
    "check_symmetric",
    "hessian_operator",
    "preconditioned",
    "PreconditionedOperator",
]
