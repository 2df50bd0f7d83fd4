"""notebooks/racecomp_colab.ipynb: valid nbformat-4 JSON without outputs, its install cell refuses to go on while
RACECOMP_SOURCE is empty, and every code cell runs, in order, on tiny demo data on the CPU, as the notebook's
first cell documents: in a Jupyter kernel (nbclient + ipykernel), RACECOMP_SOURCE set to this checkout, shell
`!` lines printed instead of run, small settings set right after the parameters cell. Without nbclient the
cells run through IPython's own translation of `!` lines in one namespace (the same code, no kernel)."""
import json
import os
import sys
import types

import pytest

from racecomp import toyfairface

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "racecomp_colab.ipynb")
EMPTY_SOURCE = 'RACECOMP_SOURCE = ""'
# Replaces the shell for `!` lines: prints the command ({name} expanded from the user's variables) instead of
# running it, so the install cell's pip never touches the test machine's packages.
FAKE_SHELL = ("_shell = get_ipython()\n"
              "_shell.system = lambda command: print('[shell]', _shell.var_expand(command))\n")


def load_notebook():
    with open(NOTEBOOK, encoding="utf-8") as handle:
        notebook = json.load(handle)
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list) and cell["id"]
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "outputs committed"
    return notebook


def code_cells(notebook):
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def install_cell(notebook):
    """The code cell that sets RACECOMP_SOURCE (it must be the first: nothing else runs before the install)."""
    first = code_cells(notebook)[0]
    assert sum(line.rstrip("\n") == EMPTY_SOURCE for line in first["source"]) == 1, \
        f"the first code cell must hold the line {EMPTY_SOURCE} for the user to fill in"
    return first


def filled(cell, source):
    """The cell's code with RACECOMP_SOURCE set to `source`."""
    return "".join(f"RACECOMP_SOURCE = {source!r}\n" if line.rstrip("\n") == EMPTY_SOURCE else line
                   for line in cell["source"])


def run_in_kernel(cells, cwd):
    """Run `cells` (code strings) in a fresh Jupyter kernel; its output as text. A cell's error raises
    nbclient's CellExecutionError, whose text holds the exception's type and message."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in cells])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    text = []
    for cell in notebook.cells:
        for output in cell.outputs:
            text.append(output.get("text", "") or "".join(output.get("data", {}).get("text/plain", "")))
    return "".join(text)


def run_without_kernel(cells, capsys, monkeypatch):
    """The same cells, each translated by IPython as a kernel translates it (`!` lines become calls of
    get_ipython().system), run in order in one namespace; a cell's error is raised as it is."""
    from IPython.core.inputtransformer2 import TransformerManager
    try:
        import IPython.display  # noqa: F401 (Colab has it; a bare test machine may not)
    except ImportError:
        stub = types.ModuleType("IPython.display")
        stub.display, stub.Markdown, stub.Image = print, str, lambda filename: filename
        monkeypatch.setitem(sys.modules, "IPython.display", stub)
    namespace = {"__name__": "__main__"}

    def var_expand(command):
        return command.format(**namespace)

    shell = types.SimpleNamespace(var_expand=var_expand)
    namespace["get_ipython"] = lambda: shell
    transform = TransformerManager().transform_cell
    for index, code in enumerate(cells):
        exec(compile(transform(code), f"<cell {index}>", "exec"), namespace)
    return capsys.readouterr().out


def kernel_available():
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError:
        return False
    return True


def run_cells(cells, tmp_path, capsys, monkeypatch):
    """run_in_kernel where nbclient and ipykernel are installed, else run_without_kernel."""
    if kernel_available():
        return run_in_kernel(cells, tmp_path)
    return run_without_kernel(cells, capsys, monkeypatch)


@pytest.mark.parametrize("source, says", [
    ("", ["RACECOMP_SOURCE is empty", "git+https://github.com/", "/content/racecomp"]),
    ("{tmp_path}", ["no RaceComp folder there"]),  # a folder without pyproject.toml
])
def test_install_cell_refuses_to_go_on_without_a_racecomp_source(source, says, tmp_path, capsys, monkeypatch):
    # Without a kernel: the refusal is the cell's own Python (the kernel run of the whole notebook is below).
    cell = filled(install_cell(load_notebook()), source.format(tmp_path=tmp_path))
    with pytest.raises(Exception) as error:
        run_without_kernel([FAKE_SHELL, cell], capsys, monkeypatch)
    message = str(error.value)
    assert all(text in message for text in says), message
    assert "[shell]" not in message + capsys.readouterr().out  # pip did not run


def test_notebook_cells_run_in_order_on_demo_data(tmp_path, capsys, monkeypatch):
    notebook = load_notebook()
    first = install_cell(notebook)
    fairface = toyfairface.make_fairface(tmp_path / "fairface", n_train=28, n_val=14, size=32, seed=6)
    small = {"FAIRFACE": fairface, "RUNS": str(tmp_path / "runs"), "TABLES": str(tmp_path / "runs" / "tables"),
             "ARCH": "fastvit_t8", "RECIPE": None, "EPOCHS": 1, "BATCH_SIZE": 8, "WORKERS": 0, "BOOTSTRAP": 50,
             "EXTRA": ["--log-every", "0", "--save-samples", "0"]}
    cells = [FAKE_SHELL]
    for cell in code_cells(notebook):
        cells.append(filled(cell, REPO) if cell is first else "".join(cell["source"]))
        if "parameters" in cell["metadata"].get("tags", []):
            cells.append("".join(f"{name} = {value!r}\n" for name, value in small.items()))
    assert len(cells) == len(code_cells(notebook)) + 2
    output = run_cells(cells, tmp_path, capsys, monkeypatch)
    assert f'[shell] pip install -q "{REPO}"' in output  # the install cell installs from RACECOMP_SOURCE
    runs = tmp_path / "runs" / "upscale"
    assert (runs / "fastvit_t8-x2-black-w0.2-seed0" / "per_race.csv").is_file()
    assert (runs / "bicubic-x2" / "per_race.csv").is_file()
    assert (tmp_path / "runs" / "tables" / "tables.md").is_file()
    assert f"FairFace ({fairface}): OK" in output  # the data check's verdict, shown before training
