"""Run benchmarks on a base revision and on the working tree, alternately, in one run (before / after figures).

The base is checked out with ``git worktree`` into a temporary folder; each side gets its own compiled-rule cache
(PEPITA_DYNAMICS_CACHE) and is warmed by one untimed run, so neither pays the other's compilation. The
benchmarks' own outputs are printed one after the other (base, then head), with each side's wall time and
their ratio head / base.

Run: python benchmarks/compare.py --base bf64619 bench_ode bench_relu [--args "bench_ode:--repeats 3"]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _run(tree: Path, name: str, extra: list[str], cache: Path) -> tuple[float, str, int]:
    env = dict(os.environ, PYTHONPATH=str(tree), PEPITA_DYNAMICS_CACHE=str(cache), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(tree / "benchmarks" / f"{name}.py"), *extra], capture_output=True,
                          text=True, env=env, cwd=tree)
    return time.perf_counter() - t0, proc.stdout + (proc.stderr[-1500:] if proc.returncode else ""), proc.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="benchmark names (bench_ode, ...)")
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--args", action="append", default=[], metavar="NAME:ARGS",
                    help="extra arguments for one benchmark, e.g. 'bench_ode:--repeats 3'")
    ap.add_argument("--no-warm", action="store_true", help="skip the untimed warm-up run of each side")
    a = ap.parse_args(argv)
    extra = {}
    for spec in a.args:
        name, _, rest = spec.partition(":")
        extra[name] = rest.split()
    tmp = Path(tempfile.mkdtemp(prefix="pepita-compare-"))
    base = tmp / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), a.base], check=True,
                   capture_output=True)
    status = 0
    try:
        for name in a.names:
            if not (base / "benchmarks" / f"{name}.py").exists():
                print(f"== {name}: not in {a.base}; skipped", flush=True)
                continue
            times = {}
            for side, tree in (("base", base), ("head", ROOT)):
                cache = tmp / f"cache-{side}"
                if not a.no_warm:
                    _run(tree, name, extra.get(name, []), cache)
                wall, out, rc = _run(tree, name, extra.get(name, []), cache)
                times[side] = wall
                status = status or rc
                print(f"== {name} [{side}: {a.base if side == 'base' else 'working tree'}] {wall:.1f} s, exit {rc}")
                print(out, flush=True)
            print(f"== {name}: wall time head / base = {times['head'] / times['base']:.2f}\n", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
