"""The conformance suite of issue 21: every view of every rule held against every other.

test_rhs_views  closed forms (numpy, compiled) = numerical expectations (numpy, compiled), within stated accuracy
test_steps      one step of the full engine, the reduced torch step and the numba kernel = the one-sample definition
test_twins      an untraceable rule = its traceable twin (right-hand side and steps)
test_jacobian   the derived Jacobian (state and hyper-parameters) = finite differences of the right-hand side
test_can_fail   each kind of check catches a deliberately altered term

Shared pieces (cases, views, the definition written out in numpy) are in helpers.py. The default run is a thin
rotation over registry x activations x options; ``-m slow`` runs the full cross product.
"""
