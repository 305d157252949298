"""Counter-based random numbers for compiled kernels: Philox4x64-10, a ziggurat normal, a Gamma sampler.

A counter-based generator is a keyed bijection of a counter: the numbers of any (replica, step)
are computed directly from (seed, replica, step), with no state carried between them. A kernel
can then draw inside its loops, in any order and on any thread, and a run does not depend on the
number of threads, the block size or the chunking.

- :func:`philox4x64` is Philox4x64-10 of Salmon, Moraes, Dror & Shaw, "Parallel random numbers:
  as easy as 1, 2, 3" (SC 2011): 10 rounds, 256-bit counter, 128-bit key, four 64-bit words out.
  It is the function behind ``numpy.random.Philox``, and the tests check it bit for bit against
  numpy (numpy's generator returns philox4x64(counter + 1, key) first).
- Standard normals: the 256-layer ziggurat of Marsaglia & Tsang (J. Stat. Softw. 5(8), 2000) in
  the form numpy uses (``random_standard_normal``: one 64-bit word per draw, 8 bits of layer,
  1 sign bit, 52 bits of abscissa, the base strip's tail by Marsaglia's exponential method). The
  tables are built here from the published r and v; :func:`ziggurat_tables` checks that they close
  (the top layer reaches x = 0 with the right area).
- Gamma(a): Marsaglia & Tsang, "A simple method for generating gamma variables" (ACM TOMS 26(3),
  2000) for a >= 1, and Gamma(a + 1) U^(1/a) for 0 < a < 1; Gamma(0) is 0. 2 Gamma(n/2) is chi^2_n.

A stream is one (seed, replica, step, purpose): the words of Philox at counters
(i, step, replica, purpose) for i = 0, 1, 2, ... under the key derived from the seed
(:func:`key_of`). The state of a stream while a kernel draws from it is a tuple of 9 uint64
(:func:`stream`): four buffered words, the position in the buffer, the next i, and the three
fixed counter words; the draws take it and return the new one.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None
    HAVE_NUMBA = False

__all__ = [
    "philox4x64",
    "key_of",
    "stream",
    "next_u64",
    "next_double",
    "normal",
    "normals_into",
    "gamma",
    "ziggurat_tables",
    "ZIGGURAT_R",
    "ZIGGURAT_V",
    "PURPOSE_CHAIN",
    "PURPOSE_MIRROR",
]

_U64 = np.uint64
_M0, _M1 = _U64(0xD2E7470EE14C6C93), _U64(0xCA5A826395121157)  # Philox4x64 multipliers
_W0, _W1 = _U64(0x9E3779B97F4A7C15), _U64(0xBB67AE8584CAA73B)  # Weyl key increments
_LO32, _S32 = _U64(0xFFFFFFFF), _U64(32)
_ONE, _ZERO, _FOUR = _U64(1), _U64(0), _U64(4)
_MASK52, _S8, _S11 = _U64(0x000FFFFFFFFFFFFF), _U64(8), _U64(11)
_MASK8 = _U64(0xFF)

#: the 256-layer ziggurat's base strip edge r and common layer area v (Marsaglia & Tsang 2000, as numpy)
ZIGGURAT_R = 3.6541528853610088
#: the common area of the ziggurat's layers (with the base strip's tail), for r = ZIGGURAT_R
ZIGGURAT_V = 0.00492867323399
#: the purpose word of the reduced chain's streams (other kernels take other words)
PURPOSE_CHAIN = 0
#: the purpose word of the feedback-mirroring input xi of each step (its r normals, then its chi-square)
PURPOSE_MIRROR = 1


def _jit(fn):
    return numba.njit(cache=True, inline="always")(fn) if HAVE_NUMBA else fn


def ziggurat_tables():
    """(ki, wi, fi) of the 256-layer ziggurat for 52-bit abscissae, and the closure residual.

    Layers i = 1..255 have right edges x_i decreasing from x_255 = r; layer 0 is the base strip
    (its rectangle of width v / f(r) plus the tail beyond r). A draw takes layer i and u in
    [0, 2^52): x = u wi[i]; it is accepted at once when u < ki[i] (x below the next layer's edge).
    The residual v / x_1 + f(x_1) - 1 is how far the stack misses the peak f(0) = 1 (it is zero
    for the exact v); :func:`ziggurat_tables` returns it for the tests.
    """
    r, v = ZIGGURAT_R, ZIGGURAT_V
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    scale = 2.0**52
    ki, wi, fi = np.zeros(256, dtype=np.uint64), np.zeros(256), np.zeros(256)
    dn = tn = r
    q = v / f(r)
    ki[0] = int(dn / q * scale)
    ki[1] = 0
    wi[0] = q / scale
    wi[255] = dn / scale
    fi[0] = 1.0
    fi[255] = f(dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + f(dn)))
        ki[i + 1] = int(dn / tn * scale)
        tn = dn
        fi[i] = f(dn)
        wi[i] = dn / scale
    residual = v / dn + f(dn) - 1.0  # dn = x_1 now: the top layer [0, x_1] x [f(x_1), 1] has area v
    return ki, wi, fi, residual


_KI, _WI, _FI, _ = ziggurat_tables()


def _mulhi_portable(a, b):
    """The high 64-bit word of the 128-bit product a b of two uint64, from 32-bit halves."""
    al, ah = a & _LO32, a >> _S32
    bl, bh = b & _LO32, b >> _S32
    p0, p1, p2, p3 = al * bl, al * bh, ah * bl, ah * bh
    mid = (p0 >> _S32) + (p1 & _LO32) + (p2 & _LO32)
    return p3 + (p1 >> _S32) + (p2 >> _S32) + (mid >> _S32)


if HAVE_NUMBA:
    from llvmlite import ir as _ir
    from numba.extending import intrinsic

    @intrinsic
    def _mulhi(typingctx, a, b):
        """The high word of a b, as one 64 x 64 -> 128-bit multiplication (LLVM i128)."""
        def codegen(context, builder, signature, args):
            i128 = _ir.IntType(128)
            p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
            return builder.trunc(builder.lshr(p, _ir.Constant(i128, 64)), _ir.IntType(64))

        return numba.uint64(numba.uint64, numba.uint64), codegen
else:  # pragma: no cover
    _mulhi = _mulhi_portable


@_jit
def _mulhilo(a, b):
    """(high, low) 64-bit words of the 128-bit product a b of two uint64."""
    return _mulhi(a, b), a * b


@_jit
def philox4x64(c0, c1, c2, c3, k0, k1):
    """Philox4x64-10 of the counter (c0, c1, c2, c3) under the key (k0, k1) (all uint64): four uint64."""
    for i in range(10):
        if i > 0:
            k0 += _W0
            k1 += _W1
        h0, l0 = _mulhilo(_M0, c0)
        h1, l1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
    return c0, c1, c2, c3


def key_of(seed: int) -> np.ndarray:
    """The Philox key (2 uint64) of a seed: numpy's SeedSequence(seed) hashes it (nearby seeds, unrelated keys)."""
    return np.random.SeedSequence(int(seed)).generate_state(2, np.uint64)


@_jit
def stream(replica, step, purpose):
    """The state of stream (replica, step, purpose), at its start: a tuple of 9 uint64 (four buffered
    words, the buffer position, the next block index i, step, replica, purpose). The state is a
    value (passed in and returned by the draws): no array, so no reference counting in hot loops."""
    z = _ZERO
    return (z, z, z, z, _FOUR, z, _U64(step), _U64(replica), _U64(purpose))


@_jit
def next_u64(s, key):
    """(the next 64-bit word of stream s under key (uint64[2]), the new state). Word 4 i + j of a
    stream is word j of philox4x64((i, step, replica, purpose), key)."""
    w0, w1, w2, w3, pos, i, step, rep, pur = s
    if pos >= _FOUR:
        w0, w1, w2, w3 = philox4x64(i, step, rep, pur, key[0], key[1])
        i += _ONE
        pos = _ZERO
    w = w0 if pos == _ZERO else (w1 if pos == _ONE else (w2 if pos == _U64(2) else w3))
    return w, (w0, w1, w2, w3, pos + _ONE, i, step, rep, pur)


@_jit
def next_double(s, key):
    """(uniform on [0, 1) from the top 53 bits of the next word, the new state)."""
    w, s = next_u64(s, key)
    return float(w >> _S11) * (1.0 / 9007199254740992.0), s


@_jit
def _ziggurat(w):
    """The ziggurat's fast path on one word w: (x, layer, accepted). x = u wi[layer] with the word's
    sign bit; accepted when u < ki[layer] (x lies under the next layer: 99.3% of words)."""
    idx = w & _MASK8
    w = w >> _S8
    rabs = (w >> _ONE) & _MASK52
    x = float(rabs) * _WI[idx]
    if (w & _ONE) == _ONE:
        x = -x
    return x, idx, rabs < _KI[idx]


@_jit
def normal(s, key):
    """(a standard normal, the new state): the 256-layer ziggurat of the module docstring, one word
    per draw 99.3% of the time (this fast path is inlined; the rest is :func:`_normal_slow`)."""
    w, s = next_u64(s, key)
    x, idx, hit = _ziggurat(w)
    if not hit:
        x, s = _normal_slow(s, key, idx, x)
    return x, s


@numba.njit(cache=True) if HAVE_NUMBA else (lambda f: f)
def _normal_slow(s, key, idx, x):
    """The ziggurat's slow paths, from a word that missed its layer's inner rectangle (layer idx,
    abscissa x), then fresh words until one is accepted."""
    while True:
        if idx == _ZERO:  # the tail beyond r (Marsaglia 1964)
            while True:
                u1, s = next_double(s, key)
                u2, s = next_double(s, key)
                xx = -math.log1p(-u1) / ZIGGURAT_R
                yy = -math.log1p(-u2)
                if yy + yy > xx * xx:
                    return math.copysign(ZIGGURAT_R + xx, x), s  # the sign bit of x (also of -0.0)
        u, s = next_double(s, key)
        if (_FI[idx - _ONE] - _FI[idx]) * u + _FI[idx] < math.exp(-0.5 * x * x):
            return x, s
        w, s = next_u64(s, key)
        x, idx, hit = _ziggurat(w)
        if hit:
            return x, s


@_jit
def normals_into(out, col, start, stop, s, key):
    """out[start:stop, col] = standard normals (the draws of :func:`normal`, in order); returns the new
    state. The fast path is written out here rather than called: numba compiles this loop several
    times faster than the same loop over calls of :func:`normal`."""
    for i in range(start, stop):
        w, s = next_u64(s, key)
        x, idx, hit = _ziggurat(w)
        if not hit:
            x, s = _normal_slow(s, key, idx, x)
        out[i, col] = x
    return s


@_jit
def gamma(s, key, a):
    """(Gamma(a) with unit scale, the new state) for a >= 0: Marsaglia-Tsang for a >= 1,
    Gamma(a + 1) U^(1/a) for 0 < a < 1, and 0 for a = 0 (no draw)."""
    if a <= 0.0:
        return 0.0, s
    boost = 1.0
    if a < 1.0:
        u, s = next_double(s, key)
        boost = u ** (1.0 / a)
        a += 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        w, s = next_u64(s, key)  # a standard normal x, as normal() (written out: see normals_into)
        x, idx, hit = _ziggurat(w)
        if not hit:
            x, s = _normal_slow(s, key, idx, x)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u, s = next_double(s, key)
        if u < 1.0 - 0.0331 * (x * x) * (x * x) or math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v * boost, s
