"""The counter-based random numbers of the reduced sampler's kernel (simulate.engines.reduced.rng).

1. Philox4x64-10 bit for bit against numpy's Philox (the same function, a well-kept implementation).
2. The ziggurat's tables close, and its normals, the Gamma sampler (chi-square) and the words are
   distributed as they should be: Kolmogorov-Smirnov and moments at 5 standard errors, from 10^7
   normals and 10^6 variables per Gamma shape; no correlation between neighbouring streams.
3. What keying by (seed, replica, step) buys: a run of the numba backend does not depend on the
   threads, the block size, the chunking, or how many replicas run beside a replica.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

import simulate
from simulate.engines.reduced import kernel as _reduced_kernel
from simulate.engines.reduced import rng as _rng

numba = pytest.importorskip("numba")


@numba.njit
def _normals(key, replicas, steps, per):
    """per normals from each stream (replica, step, 0): array (replicas * steps * per,)."""
    out = np.empty((replicas * steps, per))
    k = 0
    for i in range(replicas):
        for j in range(steps):
            s = _rng.stream(i, j, 0)
            s = _rng.normals_into(out, 0, 0, 0, s, key)  # nothing: an empty range must not draw
            for a in range(per):
                x, s = _rng.normal(s, key)
                out[k, a] = x
            k += 1
    return out.ravel()


@numba.njit
def _gammas(key, a, n):
    out = np.empty(n)
    for i in range(n):
        g, s = _rng.gamma(_rng.stream(i, 7, 1), key, a)
        out[i] = g
    return out


def test_philox_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = [int(x) for x in rng.integers(0, 2**64, 4, dtype=np.uint64)]
        key = rng.integers(0, 2**64, 2, dtype=np.uint64)
        # numpy's generator increments its 256-bit counter, then returns philox4x64(counter, key)
        before = (c[0] | c[1] << 64 | c[2] << 128 | c[3] << 192) - 1
        words = np.array([(before >> (64 * i)) & (2**64 - 1) for i in range(4)], dtype=np.uint64)
        ref = np.random.Philox(counter=words, key=key).random_raw(4)
        got = _rng.philox4x64(*(np.uint64(x) for x in c), key[0], key[1])
        assert [int(x) for x in got] == [int(x) for x in ref]
    # and the portable 32-bit-halves product the intrinsic replaces
    a, b = (np.uint64(x) for x in rng.integers(0, 2**64, 2, dtype=np.uint64))
    assert int(_rng._mulhi_portable(a, b)) == (int(a) * int(b)) >> 64


@numba.njit
def _words(key, replica, step, purpose, n):
    out = np.empty(n, dtype=np.uint64)
    s = _rng.stream(replica, step, purpose)
    for i in range(n):
        w, s = _rng.next_u64(s, key)
        out[i] = w
    return out


def test_stream_words_are_philox_blocks_in_order():
    key = _rng.key_of(3)
    got = [int(w) for w in _words(key, 11, 5, 2, 9)]
    ref = [int(w) for i in range(3) for w in _rng.philox4x64(np.uint64(i), np.uint64(5), np.uint64(11), np.uint64(2),
                                                             key[0], key[1])]
    assert got == ref[:9]


def test_ziggurat_tables_close():
    ki, wi, fi, residual = _rng.ziggurat_tables()
    assert abs(residual) < 1e-9  # the top layer ends at x = 0 with area v: r and v are consistent
    x = wi[1:] * 2.0**52  # right edges x_1 < ... < x_255 = r
    assert np.all(np.diff(x) > 0) and x[-1] == pytest.approx(_rng.ZIGGURAT_R, rel=1e-15)
    np.testing.assert_allclose(fi[1:], np.exp(-0.5 * x * x), rtol=1e-14)
    # every layer has the area v: x_i (f(x_{i-1}) - f(x_i)) for the rectangles above the base strip
    area = x[1:] * (fi[1:-1] - fi[2:])
    np.testing.assert_allclose(area, _rng.ZIGGURAT_V, rtol=1e-9)


def test_normals_distribution():
    x = _normals(_rng.key_of(1), 20_000, 100, 5)  # 10^7 normals from 2e6 streams
    n = len(x)
    assert scipy.stats.kstest(x, "norm").pvalue > 1e-4
    m2, m4 = (x * x).mean(), (x**4).mean()
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs(m2 - 1) < 5 * math.sqrt(2 / n)
    assert abs(m4 - 3) < 5 * math.sqrt(96 / n)
    assert abs((x**3).mean()) < 5 * math.sqrt(15 / n)
    for c in (1.0, _rng.ZIGGURAT_R, 4.5):  # the layers, the base strip's tail (the slow path), far out
        p = 2 * scipy.stats.norm.sf(c)
        assert abs((np.abs(x) > c).mean() - p) < 5 * math.sqrt(p * (1 - p) / n), c
    assert abs((x > 0).mean() - 0.5) < 5 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 247.5, 4999.5])
def test_gamma_distribution(a):
    n = 1_000_000
    g = _gammas(_rng.key_of(2), a, n)
    assert np.all(g > 0)
    assert scipy.stats.kstest(g, "gamma", args=(a,)).pvalue > 1e-4
    assert abs(g.mean() - a) < 5 * math.sqrt(a / n)
    assert abs(g.var() - a) < 5 * math.sqrt((2 * a * a + 6 * a) / n)
    # shape 0 (D = r): chi^2_0 = 0, and no word is drawn
    z, s = _rng.gamma(_rng.stream(0, 0, 0), _rng.key_of(2), 0.0)
    assert z == 0.0 and int(s[4]) == 4


def test_neighbouring_streams_are_uncorrelated():
    key = _rng.key_of(5)
    x = _normals(key, 400, 500, 2).reshape(400, 500, 2)
    n = x[:, :, 0].size
    for a, b in ((x[:-1, :, 0], x[1:, :, 0]), (x[:, :-1, 0], x[:, 1:, 0]), (x[..., 0], x[..., 1])):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 5 / math.sqrt(n)
    # other seeds, other numbers
    y = _normals(_rng.key_of(6), 400, 500, 2).reshape(400, 500, 2)
    assert abs(np.corrcoef(x.ravel(), y.ravel())[0, 1]) < 5 / math.sqrt(x.size)


def _run(replicas=40, t=(0.0, 0.3), **kw):
    init = simulate.Initialisation(K=2, M=2, D=60, seed=1)
    opts = dict(eta=1.2, sigma=0.2, replicas=replicas, seed=9, n_test=0, backend="numba")
    opts.update(kw)
    return simulate.run_reduced(init, "pepita", list(t), **opts)


def test_run_does_not_depend_on_threads_block_size_chunking_or_neighbours(monkeypatch):
    ref = _run(threads=1)
    assert ref.params["backend"] == "numba" and np.all(np.isfinite(ref.Q))
    for label, res in (("threads", _run(threads=2)), ("chunking", _run(t=(0.0, 0.1, 0.15, 0.3), threads=2))):
        for k in "QRSv":
            np.testing.assert_array_equal(getattr(res, k)[:, -1], getattr(ref, k)[:, -1], err_msg=f"{label} {k}")
    monkeypatch.setattr(_reduced_kernel, "RNG_REPLICA_BLOCK", 7)
    res = _run(threads=2)
    for k in "QRSv":
        np.testing.assert_array_equal(getattr(res, k), getattr(ref, k), err_msg=f"block size {k}")
    monkeypatch.undo()
    few = _run(replicas=9, threads=1)  # replica i's path is keyed by i: the same beside 8 or 39 others
    for k in "QRSv":
        np.testing.assert_array_equal(getattr(few, k), getattr(ref, k)[:9], err_msg=f"replicas {k}")
    # the test can fail: another seed moves every replica
    other = _run(threads=1, seed=10)
    assert np.all(other.Q[:, -1, 0, 0] != ref.Q[:, -1, 0, 0])


def test_sampler_draws_are_the_kernels_draws_in_any_block_size():
    a = _reduced_kernel.ChunkSampler(4, 45, 5, 50, noise=True, block=32).draw(3)
    b = _reduced_kernel.ChunkSampler(4, 45, 5, 50, noise=True, block=5).draw(3)
    per = lambda x: np.moveaxis(x, -1, 1).reshape((-1,) + x.shape[1:-1])[:45]  # noqa: E731  replica-major
    for name in ("eps", "gam", "zeta"):
        np.testing.assert_array_equal(per(getattr(a, name)), per(getattr(b, name)), err_msg=name)
    assert np.all(2 * per(a.gam) > 0)
