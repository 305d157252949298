"""A rule as a user would write it in their own script (for the benchmarks' path figures)."""

import theory


@theory.register_rule
class SignSymmetry(theory.Rule):
    """Sign-symmetric feedback (Liao, Leibo & Poggio 2016): delta_k = sign(v_k) g'(lambda_k) e."""

    name = "sign-symmetry"
    closed_form = "feedback"

    def feedback(self, x):
        return x.xp.sign(x.v)

    def update(self, x):
        return theory.LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])
