"""Compiled views generated from a rule's one definition (numba), and the kernels they plug into.

rule.py         the compiled rule: traced update -> generated module (cached on disk, pruned to a size cap), its ABI.
template.py     the template of a generated module: real Python functions with placeholders, specialised by ast.
closed.py       the compiled closed-form right-hand side of the feedback family.
quadrature.py   the compiled numerical-expectation right-hand side (and the kink-aware one): templates and helpers.
"""
