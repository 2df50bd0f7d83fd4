"""The package's layers, read from its source: the imports form no cycle, and no lower layer (data, models, the
training loop, metrics, statistics) imports a higher one (studies, tables, the sweep). Function-level imports
count too: they are deferred, not absent."""
import ast
import os

import racecomp

PACKAGE = os.path.dirname(os.path.abspath(racecomp.__file__))
HIGHER = ("racecomp.studies", "racecomp.tables", "racecomp.sweep")
STATISTICS = ("racecomp.estimates", "racecomp.fairness", "racecomp.contrasts", "racecomp.planner")


def module_name(path):
    parts = os.path.relpath(path[:-3], os.path.dirname(PACKAGE)).split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: racecomp modules it imports anywhere in its source}."""
    paths = {module_name(os.path.join(folder, name)): os.path.join(folder, name)
             for folder, _, names in os.walk(PACKAGE) for name in names if name.endswith(".py")}
    graph = {}
    for module, path in paths.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).rstrip(".")
                imported.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                                for alias in node.names)
        graph[module] = {name for name in imported if name in paths and name != module}
    return graph


def cycles(graph):
    """Import cycles of the graph, each as a path that comes back to its start."""
    state, found = {}, []

    def visit(module, stack):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append(stack[stack.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, stack + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def upward_imports(graph):
    """{module: higher-layer modules it imports} for every lower module that does, and the imports between the
    two higher layers that stand side by side (a study never reads the tables, the tables never run a study)."""
    found = {}
    for module, imported in graph.items():
        if module.startswith("racecomp.tables"):
            higher = ("racecomp.studies", "racecomp.sweep")
        elif module.startswith(("racecomp.studies", "racecomp.sweep")):
            higher = ("racecomp.tables",)
        else:
            higher = () if module == "racecomp" else HIGHER
        bad = sorted(i for i in imported if higher and i.startswith(higher))
        if bad:
            found[module] = bad
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_no_lower_layer_imports_a_higher_one():
    assert upward_imports(import_graph()) == {}


def test_the_statistics_import_only_each_other():
    graph = import_graph()
    assert {m: sorted(graph[m] - set(STATISTICS)) for m in STATISTICS} == {m: [] for m in STATISTICS}


def test_the_checks_see_a_planted_violation(tmp_path, monkeypatch):
    """Imports of every form (absolute, from-import of a module, relative, deferred) are read, and a metric that
    imports the tables is both a cycle and an upward import."""
    package = tmp_path / "racecomp"
    (package / "tables").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tables" / "__init__.py").write_text("from . import report\n")
    (package / "tables" / "report.py").write_text("def f():\n    from racecomp import metrics\n")
    (package / "metrics.py").write_text("import racecomp.tables.report\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", str(package))
    graph = import_graph()
    assert graph == {"racecomp": set(), "racecomp.tables": {"racecomp.tables.report"},
                     "racecomp.tables.report": {"racecomp.metrics"}, "racecomp.metrics": {"racecomp.tables.report"}}
    assert cycles(graph) == [["racecomp.metrics", "racecomp.tables.report", "racecomp.metrics"]]
    assert upward_imports(graph) == {"racecomp.metrics": ["racecomp.tables.report"]}
