"""Feedback alignment (Lillicrap et al. 2016): delta_k = b_k g'(lambda_k) e with a fixed random b."""

from ._base import LocalUpdate, Rule, register_rule


@register_rule
class FA(Rule):
    """The backward pass uses a fixed random feedback vector b (OrderParams.b) in place of v."""

    name = "fa"
    reads = ("b",)

    def feedback(self, x):
        return x.b

    def update(self, x):
        return LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])
