"""Markdown tables of tables.md: the cells that say what a comparison is about, the columns that tell the rows'
experiments apart (joined into one "experiment" column when they would not fit in MAX_COLUMNS), and the table
itself. Numbers are written by tables.formatting.
"""
from racecomp.tables.experiments import canonical
from racecomp.tables.formatting import cell_magnitude, format_number, markdown_text


MAX_COLUMNS = 10  # the widest markdown table: what a paper's page holds


WARNINGS_NOTE = ("Rows with `warnings` come from runs that failed a sanity check after their evaluation (chance "
                 "accuracy, collapsed embeddings, below the bicubic floor; racecomp.sanity, the run's args.json and "
                 "the problems list name the numbers): a broken model, not a result.")


def methods_note(*names):
    return f"Methods: {', '.join(names)} (see the Methods section)."


def markdown_table(header, rows):
    lines = ["| " + " | ".join(markdown_text(cell) for cell in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]
    flagged = "warnings" in header and any(row[header.index("warnings")] for row in rows)
    return "\n".join(lines) + (f"\n\n{WARNINGS_NOTE}" if flagged else "")


def code_span(text):
    """`text` inside a markdown code span: on one line, its backticks as quotes (markup inside is shown as is)."""
    return " ".join(str(text).splitlines()).replace("`", "'")


def varying_columns(experiments, exclude=()):
    """(columns whose values differ between the experiments, 'column=value' text of the constant ones)."""
    columns = []
    for e in experiments:
        columns += [c for c in e.columns if c not in columns and c != "study" and c not in exclude]
    varying = [c for c in columns if len({canonical(e.columns.get(c, "")) for e in experiments}) > 1]
    constant = ", ".join(f"{c}={experiments[0].columns.get(c, '')}" for c in columns if c not in varying)
    return varying, constant


def label_layout(experiments, other_columns, exclude=()):
    """(header, experiment -> cells, constant text) of the columns that tell the rows' experiments apart: one
    column each when the table stays within MAX_COLUMNS beside `other_columns`, else one joined column; none
    for a single experiment (the constant text names it)."""
    varying, constant = varying_columns(experiments, exclude)
    if any(e.warnings for e in experiments):  # a broken model's rows are marked in every table they are in
        header, cells, constant = _label_layout_of(varying, constant, other_columns + 1)
        return header + ["warnings"], lambda e: cells(e) + [", ".join(e.warnings)], constant
    return _label_layout_of(varying, constant, other_columns)


def _label_layout_of(varying, constant, other_columns):
    if not varying:
        return [], lambda e: [], constant
    if len(varying) + other_columns <= MAX_COLUMNS:
        return varying, lambda e: [e.columns.get(c, "-") for c in varying], constant
    return ["experiment"], lambda e: [", ".join(f"{c}={e.columns.get(c, '-')}" for c in varying)], constant


def intro(constant, extra=""):
    common = f"Common to all rows: {markdown_text(constant)}." if constant else ""
    return " ".join(part for part in (common, extra) if part)


def scope_text(entry):
    """What a paired_test entry's headline interval is about, with its seeds."""
    if entry["level"] != "recipe":
        return entry["scope"]
    if entry["reference_exact"]:
        return f"{entry['scope']}: {entry['n_seeds_a']} seeds vs an untrained reference (known exactly)"
    paired = ", seeds paired" if entry["seeds_paired"] else ""
    return f"{entry['scope']}: {entry['n_seeds_a']} vs {entry['n_seeds_b']} seeds{paired}"


def seed_sd_text(entry):
    """Seed-to-seed sd of each side's per-seed mean (and of the per-seed difference when seeds are paired)."""
    if entry["level"] != "recipe":
        return "(1 seed)"
    reference = "exact" if entry["reference_exact"] else format_number(entry["seed_sd_b"])
    text = f"{format_number(entry['seed_sd_a'])} / {reference}"
    return text + (f" (difference {format_number(entry['seed_sd_difference'])})" if entry["seeds_paired"] else "")


def bounds_text(lo, hi):
    magnitude = cell_magnitude(lo, hi)
    return f"[{format_number(lo, magnitude)}, {format_number(hi, magnitude)}]"
