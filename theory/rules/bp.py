"""Backpropagation (online SGD): delta_k = v_k g'(lambda_k) e, presynaptic input x."""

from ._base import LocalUpdate, Rule, register_rule


@register_rule
class BP(Rule):
    """Online gradient descent on the squared error: the first layer's feedback is v itself."""

    name = "bp"

    def feedback(self, x):
        return x.v

    def update(self, x):
        return LocalUpdate(delta=self.feedback(x) * x.dg(x.lam) * x.e[..., None])
