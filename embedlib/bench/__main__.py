"""``python -m embedlib.bench [--device cpu|cuda] [--sizes small|default|large] [--json out.json]``.

Exit status: 0 when every target measured was met, 3 when one was not (the table says which), and
1 (Python's own) when the run itself failed, so that a script can tell the two apart."""
from __future__ import annotations

import argparse
import sys

from embedlib.bench import EXTRA_SUITES, SIZES, SUITES, format_table, run, write_json


#: exit status when the run worked but a target was not met (a crash exits with 1)
TARGET_NOT_MET = 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedlib.bench", description=__doc__.split("``")[0] +
                                     "Benchmarks of embedlib's lookups, backward passes and bags.")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--sizes", default="default", choices=sorted(SIZES),
                        help="preset sizes: small (seconds), default (the targets' shapes), large")
    parser.add_argument("--suites", default=",".join(SUITES),
                        help=f"comma-separated subset of {','.join(SUITES)} (default: all of these), "
                             f"and {','.join(EXTRA_SUITES)} (GPU kernel block sizes, only when named)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement and the environment here")
    parser.add_argument("--max-onehot-gib", type=float, default=None,
                        help="skip one-hot sizes above this many GiB (default: the library's guard, "
                             "or a quarter of the free memory if less)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the tables")
    args = parser.parse_args(argv)
    suites = tuple(x.strip() for x in args.suites.split(",") if x.strip())
    limit = None if args.max_onehot_gib is None else int(args.max_onehot_gib * 2**30)
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, file=sys.stderr, flush=True))
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    save = None if not args.json else (lambda partial_report: write_json(partial_report, args.json))
    report = run(args.device, args.sizes, suites, limit, log, partial=save)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwrote {args.json}")
    failed = [t for t in report["targets"] if t["passed"] is False]
    return 0 if not failed else TARGET_NOT_MET


if __name__ == "__main__":
    sys.exit(main())
