"""The four learning rules, each defined once as what it does to one sample (THEORY.md section 3).

Every rule updates, with eta the first-layer and eta_v the second-layer learning rate and kappa
the weight decay,

    w_k <- w_k - (eta / sqrt D) * delta_k * xp  -  (eta * kappa / D) * w_k
    v_k <- v_k - (eta_v / D) * e_out * h_k

and the presynaptic input is always of the form xp = x + alpha * f / sqrt D, with alpha = 0 for
the clean input x and alpha = -sigma_F e for the modulated input xt = x - F e, F = sigma_F f/sqrt D.
So a rule is fully described, for one sample, by the four quantities (delta, alpha, e_out, h) as
functions of the local fields lambda (K,), nu (M,), the noise zeta and the current v, S:
:meth:`Rule.local_update`. The closed-form ODEs, the numerical expectations, the full simulation
and the reduced sampler are views of that one function, and the tests hold them against each
other.

The presynaptic overlaps xi (xp . u / sqrt D for u = w_l, w*_n, f) follow as
(lambda_l + alpha S_l, nu_n + alpha U_n, phi + alpha P).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ._activations import Activation, activation

__all__ = ["Rule", "LocalUpdate", "make_rule", "RULES"]

RULES = ("bp", "fa", "afa", "pepita")
_PRESYNAPTIC = {"bp": ("clean",), "fa": ("clean",), "afa": ("modulated", "clean"), "pepita": ("modulated", "clean")}
_PEPITA_ERRORS = ("first", "modulated")


class LocalUpdate(NamedTuple):
    """One sample's update: delta (..., K), alpha (...), e_out (...), h (..., K), and the error e (...)."""

    delta: Any
    alpha: Any
    e_out: Any
    h: Any
    e: Any


@dataclasses.dataclass(frozen=True)
class Rule:
    """A learning rule with its variant.

    name : "bp" (SGD), "fa" (feedback alignment), "afa" (adaptive FA), "pepita".
    presynaptic : "modulated" (xt = x - F e) or "clean" (x). bp and fa are always "clean".
        For pepita, THEORY.md calls the clean variant "forward"; both names are accepted.
    error : pepita only; the last-layer error e_out from the "first" pass (ICLR 2024 code,
        default) or from the "modulated" pass, et = sum_k v_k g(lambdat_k) - y (ICML 2022 code).
    """

    name: str
    presynaptic: str = "clean"
    error: str = "first"

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"rule: unknown rule {self.name!r}; expected one of {RULES}")
        if self.presynaptic not in _PRESYNAPTIC[self.name]:
            raise ValueError(
                f"rule: presynaptic={self.presynaptic!r} is not available for {self.name!r}; "
                f"expected one of {_PRESYNAPTIC[self.name]}"
            )
        if self.error not in _PEPITA_ERRORS:
            raise ValueError(f"rule: error={self.error!r}; expected one of {_PEPITA_ERRORS}")
        if self.name != "pepita" and self.error != "first":
            raise ValueError(f"rule: error={self.error!r} applies to pepita only, not {self.name!r}")

    @property
    def modulated(self) -> bool:
        return self.presynaptic == "modulated"

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.name in ("afa", "pepita"):
            parts.append(f"pre={self.presynaptic}")
        if self.name == "pepita":
            parts.append(f"err={self.error}")
        return "[" + ", ".join(parts) + "]" if len(parts) > 1 else self.name

    def local_update(self, lam, nu, zeta, *, v, v_star, S=None, b=None, sigma=0.0, sigma_F=1.0, g: Activation | str = "erf") -> LocalUpdate:
        """One sample's (delta, alpha, e_out, h, e) from the local fields.

        lam (..., K) and nu (..., M) are the student and teacher pre-activations w.x/sqrt D,
        zeta (...) the standard-normal output noise. v (..., K), v_star (..., M), S (..., K) and
        b (..., K) broadcast against the leading dimensions. Works for numpy arrays and torch
        tensors (nothing here is backend-specific beyond g and g').
        """
        g = activation(g)
        gl = g.g(lam)
        y = (v_star * g.g(nu)).sum(-1) + sigma * zeta
        e = (v * gl).sum(-1) - y
        alpha = -sigma_F * e if self.modulated else 0.0 * e
        e_out, h = e, gl
        if self.name == "bp":
            delta = v * g.dg(lam) * e[..., None]
        elif self.name == "fa":
            if b is None:
                raise ValueError("rule 'fa' needs the feedback vector b (OrderParams.b)")
            delta = b * g.dg(lam) * e[..., None]
        elif self.name == "afa":
            delta = sigma_F * S * g.dg(lam) * e[..., None]
        else:  # pepita
            lam_t = lam - sigma_F * S * e[..., None]
            h = g.g(lam_t)
            delta = gl - h
            if self.error == "modulated":
                e_out = (v * h).sum(-1) - y
        return LocalUpdate(delta, alpha, e_out, h, e)


def make_rule(rule: str | Rule, *, presynaptic: str | None = None, error: str | None = None) -> Rule:
    """Build a :class:`Rule` from its name and variant, with THEORY.md's defaults.

    presynaptic defaults to "modulated" for afa and pepita and "clean" for bp and fa;
    error (pepita) defaults to "first".
    """
    if isinstance(rule, Rule):
        if presynaptic is None and error is None:
            return rule
        rule = rule.name
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule: unknown rule {rule!r}; expected one of {RULES}")
    if presynaptic == "forward":
        presynaptic = "clean"
    if presynaptic is None:
        presynaptic = "modulated" if rule in ("afa", "pepita") else "clean"
    return Rule(rule, presynaptic=presynaptic, error="first" if error is None else error)
