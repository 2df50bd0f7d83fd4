"""summarize.py's command line (also `python -m racecomp.tables` and `racecomp-summarize`): report.summarize."""
from racecomp.cli import make_parser, run_script
from racecomp.tables.questions import MIN_EFFECT
from racecomp.tables.report import summarize

DESCRIPTION = ("Per-race fairness tables from finished runs: seeds pooled, confidence intervals, paired tests, "
               "minority penalties.")


def get_args_parser(add_help=True):
    parser = make_parser(DESCRIPTION, add_help)
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_GLOB",
                        help="run folders, folders of runs, or globs (quoted; ** recurses)")
    parser.add_argument("--out", required=True, help="folder for tables.md, the CSVs and the figures")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap replicates (studentized intervals, paired tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every bootstrap")
    parser.add_argument("--ci", type=float, default=0.95, help="confidence level of every interval")
    parser.add_argument("--min-effect", nargs="+", default=[], metavar="METRIC=VALUE",
                        help="smallest effect worth detecting, for the seed planner of findings.md (defaults: "
                             + ", ".join(f"{m}={v:g}" for m, v in MIN_EFFECT.items())
                             + "; accuracy in percentage points)")
    parser.add_argument("--no-figures", action="store_true",
                        help="tables and findings only, no PNG/PDF figures (matplotlib draws a few figures a "
                             "second; a sweep has hundreds)")
    parser.add_argument("--workers", type=int, default=None, help="processes for the paired tests and the figures "
                        "(default: the cores this process may use; the numbers do not depend on it)")
    return parser


def main(args):
    if args.n_boot < 1:
        raise SystemExit(f"--n-boot {args.n_boot}: must be positive")
    if not 0.0 < args.ci < 1.0:
        raise SystemExit(f"--ci {args.ci}: must be in (0, 1)")
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers {args.workers}: must be positive")
    min_effect = {}
    for text in args.min_effect:
        metric, _, value = text.partition("=")
        try:
            min_effect[metric] = float(value)
        except ValueError:
            raise SystemExit(f"--min-effect {text}: expected METRIC=VALUE, e.g. psnr_y=0.1") from None
        if metric not in MIN_EFFECT:
            raise SystemExit(f"--min-effect {text}: metric one of {', '.join(MIN_EFFECT)}")
        if not min_effect[metric] > 0:
            raise SystemExit(f"--min-effect {text}: the value must be > 0")
    result = summarize(args.paths, args.out, n_boot=args.n_boot, seed=args.seed, ci=args.ci, workers=args.workers,
                       min_effect=min_effect, figures=not args.no_figures)
    if not result["written"]:
        raise SystemExit(f"summarize.py: no usable finished run (folder with a valid per_race.csv) under "
                         f"{' '.join(args.paths)}; {len(result['problems'])} problem(s) printed above")
    print(f"[summarize] {result['experiments']} experiments, {len(result['problems'])} problem(s); wrote "
          f"{len(result['written'])} files to {args.out} (see tables.md)")
    return result


def command_line():
    """`racecomp-summarize ...` (installed) and `python -m racecomp.tables ...`: the same as summarize.py."""
    run_script(main, get_args_parser().parse_args())
