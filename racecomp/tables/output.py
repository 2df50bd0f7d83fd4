"""summarize's --out folder: exactly the files of the last run, each listed in MANIFEST before it is written (the
next run removes them and refuses a folder holding anything else); INCOMPLETE is there from the first file to the
last, so that a killed run's files never look like a whole set."""
import concurrent.futures
import contextlib
import multiprocessing
import os

from racecomp import files
from racecomp.errors import InputError
from racecomp.tables.plots import FORMATS, interval_figures, part_paths, write_figure

MANIFEST = "summarize_files.txt"
MANIFEST_HEADER = "# Files written by summarize.py into this folder; its next run removes them and writes its own.\n"
INCOMPLETE = "INCOMPLETE.txt"
INCOMPLETE_TEXT = ("summarize.py stopped before it finished writing this folder: its files are an incomplete set, "
                   "not to be used. Run it again; the next run replaces them.\n")


def _ours(entry, names):
    """Whether `entry` is one of `names` or a temporary file (files.atomic_path) a killed run left beside one."""
    return entry in names or entry.endswith(".tmp") and any(entry.startswith(f".{name}.") for name in names)


def earlier_outputs(out_dir):
    """The files an earlier summarize wrote into `out_dir` ([] for a new folder); InputError naming the first
    file it did not write (or --out being a file), so that nothing of anyone else's is removed."""
    if not os.path.exists(out_dir):
        return []
    if not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir} is a file, not a folder")
    listed, manifest = [], os.path.join(out_dir, MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            listed = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    ours = listed + [MANIFEST, INCOMPLETE]
    foreign = [entry for entry in sorted(os.listdir(out_dir))
               if not _ours(entry, ours) or entry in ours and not os.path.isfile(os.path.join(out_dir, entry))]
    if foreign:
        others = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise InputError(f"--out {out_dir} holds {os.path.join(out_dir, foreign[0])}{others}, which summarize.py did "
                         f"not write (not in its {MANIFEST}): choose a new or empty folder, or move that away")
    return listed


class Output:
    """What summarize writes into `out_dir`: CSVs, figures (PNG and PDF) and markdown sections. The folder is
    checked on construction (earlier_outputs) and the earlier files removed with the first new one, so a run
    with nothing to write leaves it as it was. Call close() at the end: figures may still be rendering."""

    def __init__(self, out_dir, draw_figures=True, workers=1):
        self.out_dir, self.draw_figures = out_dir, draw_figures  # draw_figures=False: summarize --no-figures
        self.workers = workers  # processes rendering figures (1: this one, as they are drawn)
        self._renderer, self._rendering = None, []  # the pool (started with the first figure), its futures
        self.earlier = earlier_outputs(out_dir)
        self.written = []  # paths, in writing order
        self.sections = []  # (title, markdown)

    def _path(self, name):
        if not self.written:
            os.makedirs(self.out_dir, exist_ok=True)
            files.write_bytes(os.path.join(self.out_dir, INCOMPLETE), INCOMPLETE_TEXT.encode("utf-8"))
            for entry in os.listdir(self.out_dir):
                if entry not in (MANIFEST, INCOMPLETE) and _ours(entry, self.earlier + [MANIFEST, INCOMPLETE]):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(self.out_dir, entry))
        self.written.append(os.path.join(self.out_dir, name))
        names = "".join(os.path.basename(p) + "\n" for p in self.written)
        files.write_bytes(os.path.join(self.out_dir, MANIFEST), (MANIFEST_HEADER + names).encode("utf-8"))
        return self.written[-1]

    def csv(self, name, rows):
        """dict rows as a CSV whose columns are every row's keys in order of appearance; nothing when empty."""
        if rows:
            files.write_csv(self._path(name), rows, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))

    def text(self, name, text):
        files.write_bytes(self._path(name), text.encode("utf-8"))

    def section(self, title, text):
        """A section of tables.md; titles must tell tables apart."""
        if any(title == earlier for earlier, _ in self.sections):
            raise InputError(f"two tables named {title!r}")
        self.sections.append((title, f"## {title}\n\n{text}\n"))

    def plot(self, name, *args, **kwargs):  # the interval plot
        return self.figures(name, interval_figures, *args, **kwargs)

    def figures(self, name, draw, *args, **kwargs):
        """The figures of draw(*args, **kwargs) (a plots.*_figures function) as `name` (a .png) or its parts
        (plots.part_paths), each as PNG and PDF; returns the paths, each PNG then its PDF ([] when figures are
        off). With several workers they are rendered in other processes and exist after close()."""
        paths = []
        drawn = draw(*args, **kwargs) if self.draw_figures else []
        for part, figure in zip(part_paths(name, len(drawn)), drawn):
            figure_paths = [self._path(os.path.splitext(part)[0] + ext) for ext in FORMATS]
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
        """Wait for the figures still rendering (raising the first error) and end the worker processes; then, when
        `complete` (the last file is written), the set is whole: INCOMPLETE goes."""
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
