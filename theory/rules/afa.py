"""Adaptive feedback alignment: delta_k = sigma_F S_k g'(lambda_k) e, the first-order expansion of PEPITA."""

from ._base import LocalUpdate, Rule, register_rule, variant


@register_rule
class AFA(Rule):
    """The feedback seen by hidden unit k is (W1 F)_k = sigma_F S_k (THEORY.md sections 2 and 3).

    presynaptic : "modulated" (xt = x - F e, default) or "clean" (x; "forward" is accepted too).
    """

    name = "afa"
    reads = ("S",)
    presynaptic: str = variant("modulated", "clean", aliases={"forward": "clean"}, short="pre")

    def feedback(self, x):
        return x.sigma_F * x.S

    def update(self, x):
        return LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])
