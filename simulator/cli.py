"""Command line: `python -m simulator generate ...`, `... report ...` and `... external ...`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from .config import SIZES, SimConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulate", description="A synthetic fitness platform writing raw app exports.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="simulate days and write them to the landing zone")
    g.add_argument("--size", choices=sorted(SIZES), default="small")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--landing", required=True, help="local folder or s3://bucket/prefix")
    g.add_argument("--days", type=int, help="how many days to write (default: the size's days)")
    g.add_argument("--start-day", type=int, default=0, help="first day to write (earlier days are re-simulated, not written)")
    g.add_argument("--start-date", type=date.fromisoformat, help="calendar date of day 0 (default 2026-09-01)")
    g.add_argument("--state-dir", help="keep a state checkpoint here so later days start without replay")
    r = sub.add_parser("report", help="realism statistics computed from the landing files")
    r.add_argument("--landing", required=True)
    r.add_argument("--json", help="also write the figures to this file")
    e = sub.add_parser("external", help="write an example music-listening dataset for a mapping file "
                                        "(examples/listening/mapping.yaml)")
    e.add_argument("--out", required=True, help="local folder to write into")
    e.add_argument("--days", type=int, default=30)
    e.add_argument("--start-date", type=date.fromisoformat, default=date(2026, 9, 1))
    e.add_argument("--seed", type=int, default=7)
    e.add_argument("--users", type=int, default=400)
    e.add_argument("--items", type=int, default=300)
    e.add_argument("--files", type=int, default=3, help="split the events into this many CSV files")
    e.add_argument("--ratings", action="store_true", help="also write ratings.csv (explicit 1-5 stars)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        from .generate import generate

        cfg = SimConfig.preset(args.size, seed=args.seed, start_date=args.start_date)
        n_days = args.days if args.days is not None else cfg.days - args.start_day
        cfg = cfg.replace(days=max(cfg.days, args.start_day + n_days))
        print(f"simulating size={args.size} seed={cfg.seed} days {args.start_day}..{args.start_day + n_days - 1} "
              f"from {cfg.start_date} -> {args.landing}", flush=True)
        generate(cfg, args.landing, start_day=args.start_day, n_days=n_days, state_dir=args.state_dir,
                 log=lambda s: print(s, flush=True))
        return 0
    if args.command == "external":
        from .external import ExternalConfig, generate_external

        cfg = ExternalConfig(days=args.days, start_date=args.start_date, seed=args.seed, users=args.users,
                             items=args.items, ratings=args.ratings, files=args.files)
        generate_external(args.out, cfg, log=lambda s: print(s, flush=True))
        return 0
    from .report import format_report, report

    figures = report(args.landing)
    print(format_report(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
