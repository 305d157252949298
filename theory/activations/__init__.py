"""Activation functions g, g' and their Gaussian integrals, one module per activation.

_base.py   Activation (g, g', for numpy and torch), ACTIVATIONS and the registry by name.
erf.py     closed-form integrals of g(z) = erf(z / sqrt 2): I2, J2, I3, I4, tilt.
relu.py    exact integrals of the ReLU: arc-cosine kernels and Gaussian orthant moments.
linear.py  the integrals of g(z) = z (polynomial).

Internal: the public names are re-exported by :mod:`theory`.
"""
