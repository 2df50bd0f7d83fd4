"""Flags shared by the studies (output, training, under-sampling), each written once, their checks, and
where a script's arguments come from (its command line, or the ARGS line of a pasted notebook cell).

Each `add_*` function adds one argument group to a study's parser and returns it, so a study can put
its own flags of the same kind beside them.

torch (and engine, which brings timm) is imported only by the functions that need it, so a command without
training (summarize, toydata) parses its flags and reports its errors without loading torch.
"""
import argparse
import os
import shlex
import sys
import textwrap

from racecomp.cpus import default_workers
from racecomp.errors import InputError
from racecomp.races import parse_race, slug


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is nothing to show: a required flag, a default of None
    (its help says what happens then), or a help text that already names its default. Lines never break inside
    a flag's name (--quant-convention stays whole)."""

    def _get_help_string(self, action):
        if action.required or action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that expands --recipe (add_recipe_argument) into its flags before the command line's
    own, so a flag given explicitly overrides the recipe's (racecomp.recipes)."""
    recipe_study = None

    def parse_known_args(self, args=None, namespace=None):
        if self.recipe_study is None:
            return super().parse_known_args(args, namespace)
        args = sys.argv[1:] if args is None else list(args)
        first, _ = super().parse_known_args(args, None)
        if first.recipe is None:
            return super().parse_known_args(args, namespace)
        from racecomp import recipes
        return super().parse_known_args(recipes.expand(self.recipe_study, first.recipe, first) + args, namespace)


def make_parser(description, add_help=True):
    """The parser every command of the project starts from: exact flag names only ('--scal' is not --scale)."""
    return Parser(description=description, add_help=add_help, allow_abbrev=False, formatter_class=HelpFormatter)


def add_recipe_argument(parser, study):
    """--recipe NAME: one of `study`'s named recipes (racecomp.recipes), expanded by the parser."""
    from racecomp import recipes
    parser.recipe_study = study
    parser.add_argument("--recipe", choices=recipes.names(study), default=None, help=recipes.help_text(study))


def add_output_arguments(parser, out_help):
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=None, help=out_help)
    group.add_argument("--overwrite", action="store_true", help="replace finished results in --out")
    group.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.pth (model, optimizer and "
                       "RNG state, about 3x the model's size, for training further) once the run has finished; "
                       "without it only the final weights stay")
    group.add_argument("--seed", type=int, default=0, help="seed of sampling, splits, initialisation")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    group.add_argument("--workers", type=int, default=default_workers(), help="DataLoader worker processes "
                       "(default: the cores available to each process on a GPU machine, 2 on a CPU one, fewer "
                       "where memory is short: racecomp.cpus.default_workers)")
    return group


def add_training_arguments(parser):
    from racecomp import engine, finetune, precision, schedules
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=2, help="passes over the training set (an epoch is as "
                       "many draws as the training set before under-sampling, whatever --weight is; run_upscale.py: "
                       "see --epoch-copies)")
    group.add_argument("--batch-size", type=int, default=16, help="images per micro-batch")
    group.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    group.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate of new layers")
    group.add_argument("--encoder-lr", type=float, default=None, help="peak learning rate of the encoder "
                       "(unset: --lr)")
    group.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decoupled weight decay")
    group.add_argument("--decay-all", action="store_true", help="weight decay on every parameter (as the RaceComp "
                       "source's AdamW and arcface_torch's SGD); without it norms, biases and PReLU slopes "
                       "(1-D parameters) have none")
    group.add_argument("--optimizer", choices=engine.OPTIMIZERS, default="adamw",
                       help="adamw, or sgd (momentum 0.9)")
    group.add_argument("--warmup-steps", type=int, default=10, help="optimizer steps of linear warm-up")
    group.add_argument("--schedule", choices=schedules.SCHEDULES, default="cosine", help="learning rate after "
                       "warm-up: one cosine to 0, a cosine restarted at each --unfreeze (or --cosine-restarts) "
                       "stage, or a linear decay to 0")
    group.add_argument("--cosine-restarts", default="", help="epochs at which --schedule cosine-stages restarts "
                       "the cosine while the whole model trains (no --unfreeze), e.g. 2 (the RaceComp source's "
                       "runs: a new cosine per unfreezing stage, every stage training the whole encoder)")
    group.add_argument("--clip-grad", type=float, default=1.0, help="max gradient L2 norm (0: no clipping)")
    group.add_argument("--amp", choices=precision.AMP_CHOICES, default="auto",
                       help="mixed precision: bf16, fp16 (with loss scaling) or off (fp32); auto: off on the CPU, "
                            "bf16 on GPUs of compute capability >= 8.0, else fp16 (a T4); args.json records "
                            "the one that ran")
    group.add_argument("--finetune", choices=finetune.FINETUNE_STRATEGIES, default="full",
                       help="what of the encoder trains: full, frozen, bn_stats (BatchNorm statistics only), "
                            "bn_affine, bn_skip (BN + residual shortcuts)")
    group.add_argument("--unfreeze", default="", help="staged unfreezing: epochs at which the last 1, 2, ... "
                       "encoder stages start training, e.g. 1,3 (before: decoder/head only)")
    group.add_argument("--log-every", type=int, default=10, help="optimizer steps between progress lines")
    group.add_argument("--deterministic", action="store_true", help="deterministic kernels where torch has them "
                       "(warns where not) instead of cuDNN autotuning: on a GPU, a resumed run then matches an "
                       "uninterrupted one (on the CPU it always does); slower")
    group.add_argument("--channels-last", action="store_true", help="model and image batches in channels_last "
                       "memory format (for GPU tensor cores; much slower on the CPU, BENCHMARKS.md)")
    group.add_argument("--allow-code-change", action="store_true", help="resume a run whose checkpoint was made "
                       "by other code (another commit or changed files): refused without it; recorded in "
                       "args.json and marked in the tables")
    group.add_argument("--compile", action="store_true", help="torch.compile the training forward; the last "
                       "partial batch of each epoch is left out (one input shape); recompiles at each --unfreeze "
                       "stage")
    return group


def add_data_arguments(parser, data_help, vocabulary):
    """The training data and its under-represented race (every study that trains has both)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=None, help=data_help)
    group.add_argument("--minority", default="none", help="race to under-represent in training: "
                       f"{', '.join(slug(race) for race in vocabulary)}, or none for the balanced run")
    group.add_argument("--weight", type=float, default=1.0, help="under-representation weight W in (0, 1]")
    return group


def check_minority_values(args, vocabulary):
    """The race label of --minority (None for a balanced run), after checking --weight's range."""
    if not 0.0 < args.weight <= 1.0:
        raise InputError(f"--weight {args.weight}: must be in (0, 1]")
    try:
        return parse_race(args.minority, vocabulary, allow_none=True)
    except ValueError as error:
        raise InputError(f"--minority {args.minority}: {error}") from None


def check_minority(args, vocabulary):
    """check_minority_values, and that --weight goes with a --minority."""
    minority = check_minority_values(args, vocabulary)
    if minority is None and args.weight != 1.0:
        raise InputError("--weight needs --minority (a balanced run has no weight)")
    return minority


def check_races(text, vocabulary):
    """'all' or comma-separated race slugs -> tuple of labels, in the order given."""
    if text == "all":
        return tuple(vocabulary)
    try:
        return tuple(parse_race(name, vocabulary) for name in text.split(","))
    except ValueError as error:
        raise InputError(f"--races {text}: {error}") from None


def resolve_device(name):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return device


# What sys.argv[0] is inside a Jupyter or Colab kernel: the kernel's own launcher, never the script.
KERNEL_LAUNCHERS = ("ipykernel_launcher.py", "colab_kernel_launcher.py")


def in_notebook_kernel():
    """True when running inside an IPython kernel (Jupyter, Colab), whose sys.argv is the kernel's
    (`.../colab_kernel_launcher.py -f .../kernel-<id>.json`), not a script's."""
    if sys.argv and os.path.basename(sys.argv[0]) in KERNEL_LAUNCHERS:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return getattr(shell, "kernel", None) is not None


def script_arguments(cell_args):
    """The arguments a script parses: inside a notebook kernel, `cell_args` (the ARGS line of the pasted
    script, split like a shell line) and never the kernel's command line; elsewhere the command line, as
    always (an unknown flag is still an error). ARGS is for notebooks only: set outside one, it is refused
    rather than silently merged with or ignored beside the command line."""
    if in_notebook_kernel():
        return shlex.split(cell_args)
    if cell_args.strip():
        raise SystemExit(f"ARGS = {cell_args!r} is for a notebook cell; on the command line give the arguments "
                         f"after the script's name (and leave ARGS empty)")
    return sys.argv[1:]


# Errors that mean "the input is wrong" (a flag's value, a missing folder, bad data), not "the code is wrong";
# any other exception (a ValueError from inside the code included) shows its traceback.
USER_ERRORS = (InputError, FileNotFoundError, NotADirectoryError)


def run_script(main, args):
    """main(args) for a script: a user error prints its message without a traceback (with it: RACECOMP_DEBUG=1), and
    Ctrl-C says how to continue. (A run that failed before writing anything leaves no --out folder it made:
    racecomp.studies.run_folder removes that, and nothing else.)"""
    try:
        return main(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f" ({out})" if out and os.path.isdir(out) else ""
        raise SystemExit(f"\ninterrupted. Run the same command again to continue from the last checkpoint{where}; "
                         f"finished results are kept.") from None
    except USER_ERRORS as error:
        if os.environ.get("RACECOMP_DEBUG"):
            raise
        raise SystemExit(f"error: {error} (RACECOMP_DEBUG=1 shows where it was raised)") from None
