"""Run every benchmark and record what it prints under benchmarks/results/ (shown on the docs' benchmark page).

Each result file starts with the machine, the versions (theory.provenance()) and the command, then the
benchmark's own output. Run: python benchmarks/run_all.py [names ...]   (default: all bench_*.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    import theory

    names = (argv if argv is not None else sys.argv[1:]) or sorted(p.stem for p in HERE.glob("bench_*.py"))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    status = 0
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
        header = [f"# {name}  ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s, exit {proc.returncode})",
                  f"# cpus: {os.cpu_count()}  provenance: {json.dumps(theory.provenance(), default=str)}",
                  f"# command: python benchmarks/{name}.py", ""]
        text = "\n".join(header) + proc.stdout + (f"\n[stderr]\n{proc.stderr[-2000:]}" if proc.returncode else "")
        (out / f"{name}.txt").write_text(text)
        print(proc.stdout, flush=True)
        status = status or proc.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
