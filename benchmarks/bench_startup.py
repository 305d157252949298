"""Benchmark: start-up of a fresh process (issue: speed at the limits).

Prints the wall time (median of --repeats fresh processes) of
- ``python -c "import numpy"`` (the floor every command pays; the baseline of the ratios),
- ``import theory``, and ``import theory`` + one K = M = 2 bp learning curve (200 output times to
  t = 1000) after one warm-up process (compiled code cached on disk, no tracing, no sympy),
- ``pepita-dynamics --help`` and ``import simulate`` (neither imports torch),
and whether torch, sympy were imported by each.

    PYTHONPATH=. python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PROBE = "import sys; print('torch' in sys.modules, 'sympy' in sys.modules, file=sys.stderr)"
CASES = {
    "import numpy (baseline)": "import numpy",
    "import theory": "import theory",
    "import theory + one bp curve": "import theory; theory.integrate(theory.random_state(2, 2, D=1000, seed=0), "
    "'bp', eta=1.0)",
    "import simulate": "import simulate",
    "pepita-dynamics --help": "from simulate._cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    "
    "pass",
}


def timed(code: str, env) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + "\n" + PROBE], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return dt, proc.stderr.strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    timed(CASES["import theory + one bp curve"], env)  # warm-up: compiles once, cached on disk
    print(f"bench_startup: median wall time of {a.repeats} fresh processes ({os.cpu_count()} CPUs)")
    base = None
    for name, code in CASES.items():
        runs = [timed(code, env) for _ in range(a.repeats)]
        dt = statistics.median(r[0] for r in runs)
        torch_, sympy_ = runs[-1][1].split()
        base = dt if base is None else base
        print(
            f"  {name:32s} {dt:6.2f} s  ({dt / base:4.1f}x numpy's)  torch imported: {torch_}, sympy imported: {sympy_}"
        )


if __name__ == "__main__":
    main()
