"""summarize's --out folder: it holds exactly the files of the last run, and nobody else's file is touched.

summarize lists every file it writes in MANIFEST (one name a line), before writing it. A later run removes the
files listed there and writes its own; it refuses a folder holding anything not listed (a user's file, another
tool's output), naming it, before any work. From its first file until its last one is written the folder also
holds INCOMPLETE, so the files of a killed run never look like a whole set.
"""
import concurrent.futures
import contextlib
import multiprocessing
import os

from racecomp import files
from racecomp.errors import InputError
from racecomp.tables.plots import FORMATS, interval_figures, part_paths, write_figure

MANIFEST = "summarize_files.txt"
# Present from summarize's first file to its last: a folder holding it is an incomplete set (a killed run).
INCOMPLETE = "INCOMPLETE.txt"
INCOMPLETE_TEXT = ("summarize.py stopped before it finished writing this folder: its files are an incomplete set, "
                   "not to be used. Run it again; the next run replaces them.\n")
MANIFEST_HEADER = "# Files written by summarize.py into this folder; its next run removes them and writes its own.\n"


def _leftover_of(entry, names):
    """Whether `entry` is a temporary file of files.atomic_path left beside one of `names` by a killed run."""
    return entry.endswith(".tmp") and any(entry.startswith(f".{name}.") for name in names)


def earlier_outputs(out_dir):
    """Names of the files an earlier summarize wrote into `out_dir` ([] for a new or empty folder).

    ValueError naming the first file summarize did not write (or --out being a file), so that nothing
    of anyone else's is removed or mixed with the tables.
    """
    if not os.path.exists(out_dir):
        return []
    if not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} is a file, not a folder")
    manifest = os.path.join(out_dir, MANIFEST)
    listed = []
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            listed = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    ours = set(listed) | {MANIFEST, INCOMPLETE}
    foreign = [entry for entry in sorted(os.listdir(out_dir)) if not _leftover_of(entry, ours)
               and not (entry in ours and os.path.isfile(os.path.join(out_dir, entry)))]
    if foreign:
        others = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise InputError(f"--out {out_dir} holds {os.path.join(out_dir, foreign[0])}{others}, which summarize.py did "
                         f"not write (not in its {MANIFEST}): choose a new or empty folder, or move that away")
    return listed


class Output:
    """What summarize writes into `out_dir`: CSVs, figures (PNG and PDF) and markdown, each listed in MANIFEST first.

    Constructing it checks the folder (earlier_outputs); the earlier run's files are removed when the first
    new file is written, so a run that finds nothing to tabulate leaves the folder as it was. draw_figures=False
    (summarize --no-figures): tables only. Call close() at the end: figures may still be rendering.
    """

    def __init__(self, out_dir, draw_figures=True, workers=1):
        self.out_dir = out_dir
        self.draw_figures = draw_figures
        self.workers = workers  # processes rendering figures (1: in this one, as they are drawn)
        self._renderer = None  # their pool, started with the first figure
        self._rendering = []  # futures of the figures submitted
        self.earlier = earlier_outputs(out_dir)
        self.written = []  # paths, in writing order
        self.sections = []  # (title, markdown)

    def _path(self, name):
        if not self.written:
            os.makedirs(self.out_dir, exist_ok=True)
            files.write_bytes(os.path.join(self.out_dir, INCOMPLETE), INCOMPLETE_TEXT.encode("utf-8"))
            for entry in os.listdir(self.out_dir):
                if entry in self.earlier or _leftover_of(entry, self.earlier + [MANIFEST, INCOMPLETE]):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.out_dir, entry))
        path = os.path.join(self.out_dir, name)
        self.written.append(path)
        names = "".join(os.path.basename(p) + "\n" for p in self.written)
        files.write_bytes(os.path.join(self.out_dir, MANIFEST), (MANIFEST_HEADER + names).encode("utf-8"))
        return path

    def csv(self, name, rows):
        if rows:
            fieldnames = []
            for row in rows:
                fieldnames += [key for key in row if key not in fieldnames]
            files.write_csv(self._path(name), rows, fieldnames=fieldnames)

    def plot(self, name, *args, **kwargs):
        """The interval plot of plots.interval_figures (see figures); returns the paths."""
        return self.figures(name, interval_figures, *args, **kwargs)

    def figures(self, name, draw, *args, **kwargs):
        """The figures of draw(*args, **kwargs) (a plots.*_figures function) as `name` (a .png) or its parts
        (plots.part_paths), each written as PNG and as PDF beside it; returns the paths, each PNG followed by its
        PDF. The files are rendered in worker processes when there are several (they exist after close());
        nothing is drawn when the figures are off (summarize --no-figures)."""
        if not self.draw_figures:
            return []
        paths = []
        drawn = draw(*args, **kwargs)
        for part, figure in zip(part_paths(name, len(drawn)), drawn):
            stem = os.path.splitext(part)[0]
            figure_paths = [self._path(stem + ext) for ext in FORMATS]
            paths += figure_paths
            if self.workers < 2:
                write_figure(figure, figure_paths)
                continue
            if self._renderer is None:
                self._renderer = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"))
            self._rendering.append(self._renderer.submit(write_figure, figure, figure_paths))
        return paths

    def close(self, complete=True):
        """Wait for the figures still rendering (raising the first error) and end the worker processes; then,
        when `complete` (the last file is written) and every figure rendered, the set is whole: INCOMPLETE goes."""
        try:
            for rendering in self._rendering:
                rendering.result()
        finally:
            if self._renderer is not None:
                self._renderer.shutdown(cancel_futures=True)
            self._renderer, self._rendering = None, []
        if complete:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.out_dir, INCOMPLETE))

    def text(self, name, text):
        files.write_bytes(self._path(name), text.encode("utf-8"))

    def section(self, title, text):
        if any(title == earlier for earlier, _ in self.sections):
            raise InputError(f"two tables named {title!r}")  # names must tell tables apart
        self.sections.append((title, f"## {title}\n\n{text}\n"))
