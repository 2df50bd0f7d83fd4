"""Data tools. `python -m racecomp.datasets check --fairface DIR --rfw DIR --identities DIR` checks downloads.

Exit code: 0 when no dataset has problems (warnings alone, e.g. sizes unlike the published ones, give 0),
1 when one has, 2 on a usage error.
"""
import argparse
import sys

from racecomp.datasets import check


def get_args_parser(add_help=True):
    # allow_abbrev=False on the command's parser too (argparse does not pass it on): '--fair' is not --fairface.
    parser = argparse.ArgumentParser(prog="python -m racecomp.datasets", description="RaceComp data tools",
                                     add_help=add_help, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    checker = commands.add_parser(
        "check", allow_abbrev=False, help="check FairFace / RFW / identity-folder downloads before a long run",
        description="Report counts per split and race against the published sizes, label spellings, missing "
                    "files and image sizes (from headers), ending with one verdict per dataset. Exit code 1 "
                    "when a dataset has problems; warnings alone give 0.")
    checker.add_argument("--fairface", metavar="DIR",
                         help="FairFace root: fairface_label_{train,val}.csv, train/, val/")
    checker.add_argument("--rfw", metavar="DIR", help="RFW root: test/txts/<Race>/, test/data/<Race>/")
    checker.add_argument("--identities", metavar="DIR",
                         help="identity-folder root (BUPT layout): <Race>/<identity>/*.jpg")
    checker.add_argument("--decode", action="store_true", help="also decode every image fully, to find corrupt "
                         "files (about 1 ms per 224 px JPEG per worker; without it only headers are read)")
    checker.add_argument("--workers", type=int, default=check.default_workers(),
                         help="processes for header reads and decoding (default: min(8, CPUs))")
    return parser


def main(args):
    """Run the requested checks, print each report, then one verdict line per dataset; returns the exit code."""
    roots = {kind: getattr(args, kind) for kind in check.CHECKS if getattr(args, kind)}
    if not roots:
        print("check: give at least one of --fairface DIR, --rfw DIR, --identities DIR", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"check: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    reports = []
    for kind, root in roots.items():
        print(f"checking {kind} at {root} ...", flush=True)
        reports.append(check.CHECKS[kind](root, decode=args.decode, workers=args.workers))
        print(reports[-1].render(), flush=True)
    print("== verdict")
    for report in reports:
        print(f"{report.name} ({report.root}): {report.verdict}")
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
