"""The fault drill: run every fault-injection test (tests/faults) N times and tabulate, per fault,
how many times it was injected, how many times the pipeline survived, rows lost or duplicated,
and the time from the fault to the next successful run; plus how many remediation decisions the
failure sensor got right on the failures provoked on purpose.

    python -m benchmarks.fault_drill [--repeat 3] [-k EXPR]

Writes benchmarks/results/fault_drill.json and prints a Markdown table. Recovery times include
the retry's own work (a Dagster run, a Ray restart, a cache publish), so compare them within one
drill, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def run(repeat: int, select: str | None) -> tuple[list[dict], int, float]:
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        out = Path(tmp) / "records.jsonl"
        env = {**os.environ, "FAULT_REPEAT": str(repeat), "FAULT_DRILL_OUT": str(out)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"]
        if select:
            cmd += ["-k", select]
        start = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        seconds = time.perf_counter() - start
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return records, code, seconds


def summarize(records: list[dict]) -> list[dict]:
    by_fault: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_fault[r["fault"]].append(r)
    rows = []
    for fault, rs in sorted(by_fault.items()):
        rec = [r["recover_s"] for r in rs if r.get("recover_s") is not None]
        rows.append({
            "fault": fault,
            "injected": len(rs),
            "survived": sum(bool(r["survived"]) for r in rs),
            "rows_lost": sum(r.get("rows_lost") or 0 for r in rs),
            "rows_duplicated": sum(r.get("rows_duplicated") or 0 for r in rs),
            "rows_checked": sum(r.get("rows_expected") or 0 for r in rs),
            "recover_s_median": round(statistics.median(rec), 2) if rec else None,
            "recover_s_max": round(max(rec), 2) if rec else None,
        })
    return rows


def decisions(records: list[dict]) -> dict | None:
    rs = [r for r in records if "decisions" in r.get("detail", {})]
    if not rs:
        return None
    return {"right": sum(r["detail"]["decisions_right"] for r in rs),
            "total": sum(r["detail"]["decisions"] for r in rs),
            "table": rs[-1]["detail"].get("table")}


def table(rows: list[dict]) -> str:
    head = ("| fault | injected | survived | rows lost | rows duplicated | rows checked | "
            "time to recover (median / max) |\n|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(
        f"| {r['fault']} | {r['injected']} | {r['survived']} | {r['rows_lost']} | {r['rows_duplicated']} | "
        f"{r['rows_checked']} | "
        + (f"{r['recover_s_median']} s / {r['recover_s_max']} s" if r["recover_s_median"] is not None else "-")
        + " |" for r in rows)


def landing_rows(records: list[dict]) -> list[dict]:
    """The landing cases (tests/faults/test_landing_faults.py): outcome, what the message names,
    rows lost, gold against a rebuild, the cache, time to recover; one row per fault."""
    by_fault: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if "outcome" in r.get("detail", {}):
            by_fault[r["fault"]].append(r)
    rows = []
    for fault, rs in sorted(by_fault.items()):
        d = rs[-1]["detail"]
        rec = [r["recover_s"] for r in rs if r.get("recover_s") is not None]
        named = d.get("names") or {}
        rows.append({
            "fault": fault, "runs": len(rs), "survived": sum(bool(r["survived"]) for r in rs),
            "outcome": d["outcome"],
            "names": "/".join(("yes" if named.get(k) else "no") for k in ("file", "column", "row")) if named else "-",
            "rows_lost": sum(r.get("rows_lost") or 0 for r in rs),
            "gold_equals_rebuild": all(r["detail"].get("gold_equals_rebuild") for r in rs),
            "cache_served": all(r["detail"].get("cache_served") for r in rs),
            "recover_s_median": round(statistics.median(rec), 1) if rec else None,
            "message": d.get("message", "")[:160],
        })
    return rows


def landing_table(rows: list[dict]) -> str:
    head = ("| landing fault | runs | survived | outcome | message names file / column / row | rows lost | "
            "gold = rebuild | cache served | time to recover (median) |\n"
            "|---|---:|---:|---|---|---:|---|---|---:|\n")
    return head + "\n".join(
        f"| {r['fault']} | {r['runs']} | {r['survived']} | {r['outcome']} | {r['names']} | {r['rows_lost']} | "
        f"{'yes' if r['gold_equals_rebuild'] else 'NO'} | {'yes' if r['cache_served'] else 'NO'} | "
        f"{r['recover_s_median']} s |" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of every fault test")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression (a subset of faults)")
    args = ap.parse_args(argv)
    records, code, seconds = run(args.repeat, args.select)
    rows = summarize(records)
    landing = landing_rows(records)
    dec = decisions(records)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"repeat": args.repeat, "pytest_exit": code, "seconds": round(seconds, 1),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "faults": rows, "landing_faults": landing, "remediation_decisions": dec, "records": records}
    (RESULTS / "fault_drill.json").write_text(json.dumps(result, indent=2, default=str))
    print(table(rows))
    if landing:
        print("\n" + landing_table(landing))
        for r in landing:
            if r["message"]:
                print(f"\n{r['fault']}: {r['message']}")
    if dec:
        print(f"\nremediation decisions right: {dec['right']} of {dec['total']}")
    print(f"\n{len(records)} injections in {seconds:.0f} s; pytest exit {code}; "
          f"written to {(RESULTS / 'fault_drill.json').relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
