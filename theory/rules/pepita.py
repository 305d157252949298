"""PEPITA (Dellaferrera & Kreiman 2022): a second forward pass on the error-modulated input xt = x - F e.

    delta_k = g(lambda_k) - g(lambdat_k),   lambdat_k = w_k . xt / sqrt D = lambda_k - sigma_F S_k e,
    h_k = g(lambdat_k),   e_out = e ("first") or et = sum_k v_k g(lambdat_k) - y ("modulated").
"""

from ._base import LocalUpdate, Rule, register_rule, variant


@register_rule
class Pepita(Rule):
    """presynaptic : "modulated" (xt, default; ICLR 2024 and ICML 2022 code) or "clean" (x, "forward").
    error : the last layer's error from the "first" pass (ICLR 2024 code, default) or the "modulated"
    pass (ICML 2022 code). A negative sigma_F gives the ICML 2022 sign of F."""

    name = "pepita"
    reads = ("S",)
    presynaptic: str = variant("modulated", "clean", aliases={"forward": "clean"}, short="pre")
    error: str = variant("first", "modulated", short="err", keys={"modulated": "errmod"})

    def feedback(self, x):
        return x.sigma_F * x.S

    def update(self, x):
        h = x.g(x.lam - x.sigma_F * x.S * x.e[..., None])
        e_out = (x.v * h).sum(-1) - x.y if self.error == "modulated" else x.e
        return LocalUpdate(delta=x.g_lam - h, e_out=e_out, h=h)
