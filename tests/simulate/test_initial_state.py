"""One initial state per (K, M, D, seed): theory.random_state, simulate.Initialisation and the command line's ode,
compare and sweep all start from the same weights, and every saved result records the seed it was drawn with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simulate
import theory
from simulate import Initialisation
from simulate._cli import main


def _flat(st):
    return np.concatenate([st.Q.ravel(), st.R.ravel(), st.T.ravel(), st.S, st.U, [st.P], st.v, st.v_star, st.b])


@pytest.mark.parametrize("K, M, D, seed", [(2, 2, 100, 0), (3, 1, 57, 11), (1, 4, 400, 123)])
def test_random_state_is_the_initialisation(K, M, D, seed):
    ref = theory.random_state(K, M, D=D, seed=seed, w_std=0.7, v_std=1.5)
    init = Initialisation(K, M, D, seed=seed, w_std=0.7, v_std=1.5)
    np.testing.assert_array_equal(_flat(init.order_params()), _flat(ref))
    # replica 0 of independent students is the same student whatever the number of replicas; the others differ
    two, five = init.order_params(2, independent=True), init.order_params(5, independent=True)
    np.testing.assert_array_equal(_flat(two[0]), _flat(ref))
    np.testing.assert_array_equal(_flat(five[1]), _flat(two[1]))
    assert not np.allclose(five[1].Q, ref.Q) and not np.allclose(five[2].Q, five[1].Q)
    # another seed is another state (the check can fail)
    assert not np.allclose(_flat(theory.random_state(K, M, D=D, seed=seed + 1)), _flat(ref))


def test_results_record_the_seed():
    s0 = theory.random_state(2, 2, D=200, seed=7)
    tr = theory.integrate(s0, "bp", [0.0, 1.0], eta=1.0)
    assert (tr.params["D"], tr.params["init_seed"], tr.params["w_std"]) == (200, 7, 1.0)
    sw = theory.sweep(s0, "bp", [0.0, 1.0], eta=[0.5, 1.0], progress=False)
    assert sw.trajectory(1).params["init_seed"] == 7
    res = simulate.run(Initialisation(2, 2, 200, seed=7), "bp", [0.0, 1.0], eta=1.0, replicas=1, device="cpu",
                       n_test=0, progress=False)
    assert res.params["init_seed"] == 7 and res.params["D"] == 200
    hand = theory.OrderParams(Q=s0.Q, R=s0.R, T=s0.T, v=s0.v, v_star=s0.v_star)  # not drawn: nothing to record
    assert "init_seed" not in theory.integrate(hand, "bp", [0.0, 1.0], eta=1.0).params


def test_command_line_starts_ode_compare_and_sweep_from_one_state(tmp_path, capsys):
    common = ["--K", "2", "--M", "2", "--D", "80", "--init-seed", "5", "--t-max", "1", "--no-progress"]
    assert main(["ode", "--rules", "bp", "--out", str(tmp_path / "ode"), *common]) == 0
    assert main(["compare", "--rules", "bp", "--replicas", "1", "--n-test", "0", "--device", "cpu",
                 "--out", str(tmp_path / "cmp"), *common]) == 0
    assert main(["sweep", "--rules", "bp", "--grid", "eta=0.5,1", "--out", str(tmp_path / "sw"), *common]) == 0
    capsys.readouterr()
    want = theory.generalisation_error(theory.random_state(2, 2, D=80, seed=5))
    ode = theory.Trajectory.load(tmp_path / "ode" / "ode_bp.npz")
    sim = simulate.SimulationResult.load(tmp_path / "cmp" / "sim_bp.npz")
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert ode.eg[0] == pytest.approx(want, rel=1e-12) and ode.params["init_seed"] == 5
    assert sim.eg[0, 0] == pytest.approx(want, rel=1e-5) and sim.params["init_seed"] == 5  # float32 weights
    assert np.allclose(table["eg_initial"], want, rtol=1e-12) and list(table["seed"]) == [5, 5]
