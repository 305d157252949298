"""OrderParams validation, Omega, flat vectors."""

import numpy as np
import pytest

import theory
from tests.helpers import random_state


def test_roundtrip_vector(rng):
    st = random_state(rng, 3, 2)
    y = st.to_vector()
    assert y.shape == (3 * 3 + 3 * 2 + 2 * 3,)
    assert st.from_vector(y) == st
    assert st.from_vector(y, validate=False) == st


def test_omega_blocks(rng):
    st = random_state(rng, 2, 3)
    om = st.omega
    np.testing.assert_array_equal(om[:2, :2], st.Q)
    np.testing.assert_array_equal(om[:2, 2:5], st.R)
    np.testing.assert_array_equal(om[2:5, :2], st.R.T)
    np.testing.assert_array_equal(om[:2, -1], st.S)
    assert om[-1, -1] == st.P


@pytest.mark.parametrize("change,match", [
    (dict(Q=np.eye(3)), r"Q must be \(K, K\)"),
    (dict(Q=np.array([[1.0, 0.5], [0.4, 1.0]])), "Q must be symmetric"),
    (dict(T=np.eye(3)), r"T must be \(M, M\)"),
    (dict(v=np.ones(3)), "v must have shape"),
    (dict(v_star=np.ones(3)), "v_star must have shape"),
    (dict(S=np.ones(3)), "S must have shape"),
    (dict(b=np.ones(1)), "b must have shape"),
    (dict(P=-1.0), "P = f.f/D must be finite and >= 0"),
    (dict(R=np.full((2, 2), 3.0)), "not positive semi-definite"),
    (dict(Q=np.array([[1.0, np.nan], [np.nan, 1.0]])), "non-finite"),
])
def test_validation_names_the_parameter(change, match):
    st = theory.OrderParams(Q=np.eye(2), R=0.1 * np.eye(2), T=np.eye(2), v=np.ones(2), v_star=np.ones(2))
    with pytest.raises(ValueError, match=match):
        st.replace(**change)


def test_random_state_is_reproducible_and_scaled():
    a = theory.random_state(2, 2, D=4000, seed=5)
    b = theory.random_state(2, 2, D=4000, seed=5)
    c = theory.random_state(2, 2, D=4000, seed=6)
    assert a == b and not (a == c)
    np.testing.assert_allclose(a.T, np.eye(2), atol=5 * np.sqrt(2 / 4000))
    assert np.all(np.abs(a.S) < 5 / np.sqrt(4000))


def test_state_is_frozen(rng):
    st = random_state(rng)
    with pytest.raises(Exception):
        st.Q = np.eye(2)
    with pytest.raises(ValueError):
        st.Q[0, 0] = 3.0
