"""Run every bench script and write one JSON summary (stdout, and bench/results.json with --save).

Each script prints one JSON object on its last stdout line; a script that fails or times out is
reported with its error, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    ap.add_argument("--only", help="comma list of script stems")
    ap.add_argument("--save", action="store_true", help="also write bench/results.json")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    results = {}
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or (only and script.stem not in only):
            continue
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               timeout=a.timeout, cwd=HERE.parent)
            lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
            try:
                out = json.loads(lines[-1]) if lines else None
            except ValueError:
                out = None
            results[script.stem] = {"ok": p.returncode == 0 and out is not None, "result": out,
                                    "seconds": round(time.time() - t0, 1),
                                    **({"error": p.stderr.strip()[-500:]} if p.returncode else {})}
        except subprocess.TimeoutExpired:
            results[script.stem] = {"ok": False, "error": f"timed out after {a.timeout:.0f} s"}
        print(f"{script.stem}: {'ok' if results[script.stem]['ok'] else 'FAILED'}", file=sys.stderr)
    summary = {"scripts": len(results), "failed": [k for k, v in results.items() if not v["ok"]],
               "results": results}
    text = json.dumps(summary, indent=2)
    if a.save:
        (HERE / "results.json").write_text(text + "\n")
    print(json.dumps(summary))
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
