"""A compiled erf for the node loops: two polynomials, no table, no division, no exp; within 2.6 ulp (measured).

The compiled views evaluate g(z) = erf(z / sqrt 2) six times per quadrature node for PEPITA (K = M = 2), and
libm's ``erf`` (branches on five ranges, a division and exps) costs ~11-19 ns a call here: most of a node.
:func:`erf` costs ~3 ns in a loop that stores its values (measured: 2.8 ns against libm's 11.0 ns in the same
loop): no branch and no call, so LLVM vectorises it.

- |x| < 1: ``erf(x) = c0 x + x s P(s)``, s = x^2, the Chebyshev interpolant of erf(x)/x in s on [0, 1]
  (degree 12 in s);
- 1 <= |x| < 6: ``erf(x) = sign(x) (1 - Q(u))``, u = (|x| - 3.5) / 2.5, Q the Chebyshev interpolant of
  erfc on [1, 6] (degree 35 in u); from 6 on, 1 (erfc(6) = 2e-17 is below half an ulp of 1).

Both are summed by Estrin's scheme (depth 6 instead of Horner's 36: the chain's latency, not its count of
multiply-adds, bounded the cost), and ``erfc`` is the polynomial of the tail so that its small errors enter
``1 - Q`` absolutely. NaN in gives NaN out; +-inf gives +-1; the sign of zero is kept. Against erf at 40
digits the error is 2.6 ulp at most (near the seam at 1, where ``c0 x`` and the sum each round), 1 ulp or less
at 91% of points; against libm's 3 ulp at most, 1 ulp or less at 99.9%. Monotone except in the last bit near
|x| = 6. The coefficients are derived, not copied: :func:`derive` recomputes them with mpmath (the tests hold
the tuples below to it exactly, and :func:`erf` to mpmath's erf and to libm's on dense grids).
"""

from __future__ import annotations

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

__all__ = ["erf", "derive", "CUT", "TOP", "DEGREES"]

#: |x| below CUT: the odd polynomial; from CUT to TOP: 1 - erfc's polynomial; TOP and beyond: 1
CUT, TOP = 1.0, 6.0
#: (degree of P in s, counting c0; degree of Q in u)
DEGREES = (12, 35)
_MID, _HALF = (CUT + TOP) / 2, (TOP - CUT) / 2

_SMALL = (
    1.1283791670955126, -0.3761263890318375, 0.11283791670954879, -0.026866170645076792,
    0.0052239776248180145, -0.000854832698083379, 0.0001205533111164271, -1.4925595266831182e-05,
    1.6461000484121368e-06, -1.6350312701054695e-07, 1.4659775274047436e-08, -1.1372848856791674e-09,
    5.957176147748911e-11,
)

_TAIL = (
    7.430983723884927e-07, -1.3498566943472637e-05, 0.00011811246072477446, -0.0006608673399333946,
    0.002645226988956473, -0.008019168188191629, 0.01898052876309161, -0.03551803623419873,
    0.052275356305203316, -0.05848224051680697, 0.044260150091932404, -0.01060255289710625,
    -0.026450590897213973, 0.044952214438918156, -0.03439267819939069, 0.005337917663577196,
    0.019250332379741324, -0.023486555042450903, 0.010216153344597132, 0.005155049887383089,
    -0.010467972978675424, 0.005873105768377372, 0.0008157936932200291, -0.003780119438273348,
    0.002608775171142281, 0.00013457443969811263, -0.0015799440142755543, 0.0008138470553720222,
    0.000403454611033686, -0.0004691868339555935, -2.5080022313640096e-05, 0.00013626669866905608,
    -1.078979972317155e-05, -2.192738505444847e-05, 2.032528719646592e-06, 1.5729657771797748e-06,
)


def derive(degrees=DEGREES, cut=CUT, top=TOP, dps=50):
    """(small, tail): the monomial coefficients of the two interpolants, from mpmath at ``dps`` digits.

    small: c_j of erf(x)/x = sum_j c_j s^j, the interpolant at degrees[0] + 1 Chebyshev points of s in [0, cut^2];
    tail: q_j of erfc(x) = sum_j q_j u^j, u = (x - mid) / half, at degrees[1] + 1 Chebyshev points of [cut, top]."""
    import mpmath as mp

    with mp.workdps(dps):

        def chebyshev(f, a, b, n):
            N = n + 1
            t = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / N) for k in range(N)]
            fs = [f((b - a) / 2 * x + (a + b) / 2) for x in t]
            c = [mp.fsum(fs[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / N) for k in range(N)) * (2 if j else 1) / N
                 for j in range(N)]
            T = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]  # T_j's monomial coefficients
            while len(T) < N:
                t1 = [mp.mpf(0)] + [2 * x for x in T[-1]]
                for i, x in enumerate(T[-2]):
                    t1[i] -= x
                T.append(t1)
            return [mp.fsum(c[j] * T[j][i] for j in range(i, N) if i < len(T[j])) for i in range(N)]

        c2 = mp.mpf(cut) ** 2
        a = chebyshev(lambda s: mp.erf(mp.sqrt(s)) / mp.sqrt(s) if s > 0 else 2 / mp.sqrt(mp.pi), mp.mpf(0), c2,
                      degrees[0])
        alpha = 2 / c2  # u = alpha s - 1 on [0, cut^2]
        small = [mp.fsum(a[k] * mp.binomial(k, i) * alpha**i * (-1) ** (k - i) for k in range(i, len(a)))
                 for i in range(len(a))]
        tail = chebyshev(mp.erfc, mp.mpf(cut), mp.mpf(top), degrees[1])
        return tuple(float(x) for x in small), tuple(float(x) for x in tail)


def erf(x):
    """erf(x) within 2.6 ulp (module docstring)."""
    a = abs(x)
    s = a * a
    s2 = s * s
    s4 = s2 * s2
    c = _SMALL  # P(s) = sum_j c[j + 1] s^j, j < 12, by Estrin's scheme
    p = (((c[1] + c[2] * s) + (c[3] + c[4] * s) * s2) + ((c[5] + c[6] * s) + (c[7] + c[8] * s) * s2) * s4
         + ((c[9] + c[10] * s) + (c[11] + c[12] * s) * s2) * (s4 * s4))
    small = x * c[0] + x * (s * p)
    u = (min(a, TOP) - _MID) / _HALF
    u2 = u * u
    u4 = u2 * u2
    q = _TAIL  # Q(u) = sum_j q[j] u^j, j < 36: nine blocks of four, in powers of u^4
    b0 = (q[0] + q[1] * u) + (q[2] + q[3] * u) * u2
    b1 = (q[4] + q[5] * u) + (q[6] + q[7] * u) * u2
    b2 = (q[8] + q[9] * u) + (q[10] + q[11] * u) * u2
    b3 = (q[12] + q[13] * u) + (q[14] + q[15] * u) * u2
    b4 = (q[16] + q[17] * u) + (q[18] + q[19] * u) * u2
    b5 = (q[20] + q[21] * u) + (q[22] + q[23] * u) * u2
    b6 = (q[24] + q[25] * u) + (q[26] + q[27] * u) * u2
    b7 = (q[28] + q[29] * u) + (q[30] + q[31] * u) * u2
    b8 = (q[32] + q[33] * u) + (q[34] + q[35] * u) * u2
    u8 = u4 * u4
    u16 = u8 * u8
    tail = ((b0 + b1 * u4) + (b2 + b3 * u4) * u8) + ((b4 + b5 * u4) + (b6 + b7 * u4) * u8) * u16 + b8 * (u16 * u16)
    big = 1.0 - max(tail, 0.0) if a < TOP else 1.0  # Q(1) = 5e-17, not erfc(6) = 2e-17: it would round to 1 - ulp
    big = big if x >= 0.0 else -big
    r = small if a < CUT else big
    return r if a > 0.0 else x  # NaN and +-0 are their own erf (x s P(s) would make -0 + 0 = +0)


if HAVE_NUMBA:
    # forceinline: LLVM's alwaysinline (too big for LLVM's own choice: as a call it costs 15 ns, not 5). Not
    # numba's IR-level inline="always", which costs ~0.25 s of compile time per call site, four times as much
    erf = numba.njit(cache=True, forceinline=True)(erf)
