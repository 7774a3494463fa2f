r"""Markdown and LaTeX rendering of the tables: arrows, ``mean [lo, hi]`` cells, best values in bold.

Conventions of the tables (:mod:`audiointerp.tables`) that rendering relies on:

* a metric column ``M`` holds means, optionally followed by ``M lo`` and ``M hi`` (:data:`CI_LO`,
  :data:`CI_HI`), the bounds of its confidence interval; :func:`to_markdown` and :func:`to_latex`
  show them as ``mean [lo, hi]`` in one cell;
* each metric's direction comes from :data:`audiointerp.metrics.METRICS` (``higher_is_better``),
  or :data:`EXTRA_DIRECTIONS` for the non-metric columns ``accuracy`` and ``recon_snr_db``; headers
  get ↑ (higher is better) or ↓ (lower is better), ``$\uparrow$``/``$\downarrow$`` in LaTeX;
* count columns (:data:`COUNT_COLUMNS`: ``clips``, ``masks``, ...) are integers;
* a ``clip_set`` column (:data:`CLIP_SET`) holds the fingerprint of the clips a row averages, and
  ``M clip_set`` overrides it for metric ``M``; in a table with (group, metric) MultiIndex columns,
  ``(group, "clip_set")`` serves the metric columns of that group. The renderers hide these
  columns (the CSV copies keep them) and use them to mark best values only among rows over the
  same clips.

Best values: within each comparison group (rows sharing the ``best_within`` index levels; the
whole column without it), the best mean of each metric column by its direction is bold, and so
is every other mean of the group whose displayed text equals the best one's (ties); when every row
of a group shows the same value, none is bold (no row is better). A group whose
rows do not all share one clip set gets no bold: its rows carry a dagger (†) and a line under the
table says ``clip sets differ within <group> (<metric>, where metrics have clip sets of their own):
no best value marked``.

The row orders (:data:`METHOD_ORDER`, :data:`CONDITION_ORDER`, :data:`DOMAIN_ORDER`,
:func:`natural_order`) live here too, so that :mod:`audiointerp.figures` can use them without
importing :mod:`audiointerp.tables` (a lower layer never imports a higher one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import METRICS

__all__ = ["CI_HI", "CI_LO", "CLIP_SET", "CONDITION_ORDER", "COUNT_COLUMNS", "DAGGER", "DOMAIN_ORDER",
           "EXTRA_DIRECTIONS", "FORMATS", "METHOD_ORDER", "best_rows", "natural_order", "to_latex", "to_markdown",
           "with_arrows"]

#: display format of each column's means and CI bounds (others: ``{:g}``, counts as integers)
FORMATS = {"FF": "{:.3f}", "AI": "{:.1f}", "AD": "{:.1f}", "AG": "{:.1f}", "FidIn": "{:.3f}",
           "SPS": "{:.3f}", "COMP": "{:.2f}", "accuracy": "{:.3f}", "recon_snr_db": "{:.1f}",
           "noise_snr_db": "{:.1f}"}
#: directions (True: higher is better) of the non-metric columns that get arrows and a bold best value
EXTRA_DIRECTIONS = {"accuracy": True, "recon_snr_db": True}
#: suffixes of the lower and upper CI bound columns of a metric column ``M``: ``M lo``, ``M hi``
CI_LO, CI_HI = " lo", " hi"
#: name of the clip-set fingerprint column (hidden when rendered, kept in the CSV copies)
CLIP_SET = "clip_set"
#: integer count columns: ``clips`` (distinct clips averaged), ``masks``/``domains``/``methods``/
#: ``conditions``/``models`` (distinct values averaged over), ``n`` (rows, in tables of other modules)
COUNT_COLUMNS = ("clips", "masks", "domains", "methods", "conditions", "models", "n")
#: marker of the rows of a comparison group whose clip sets differ (no best value marked)
DAGGER = "†"
METHOD_ORDER = ["saliency", "gradcam", "shap", "lime", "piq", "l2i", "lmac", "lmac_ft"]  # then captum:* by name
CONDITION_ORDER = ["clean", "white", "white_gen", "pink", "room", "horse", "mixture"]
DOMAIN_ORDER = ["spectrogram", "audio"]


def natural_order(values, preferred) -> list:
    """The distinct ``values``: those in ``preferred`` first, in its order, then the rest sorted; a
    variant ``"<name> (<settings>)"`` (e.g. ``lime (n1000)``) right after its ``<name>``."""
    vals = list(dict.fromkeys(values))
    rank = {v: i for i, v in enumerate(preferred)}

    def key(v):
        base = str(v).split(" (", 1)[0]
        return (rank.get(v, rank.get(base, len(rank))), base, v != base, str(v))

    return sorted(vals, key=key)


def _direction(name) -> bool | None:
    if name in METRICS:
        return METRICS[name].higher_is_better
    return EXTRA_DIRECTIONS.get(name)


def _arrow(name) -> str:
    d = _direction(name)
    return "" if d is None else ("↑" if d else "↓")


def _head(name: str) -> str:
    return f"{name} {_arrow(name)}" if _arrow(name) else str(name)


def with_arrows(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose metric columns are renamed ``"FF ↑"``, ``"AD ↓"`` ... (also inside MultiIndex columns).

    CI columns ``FF lo``/``FF hi``, count and ``clip_set`` columns keep their names. Used for the
    CSV copies, which keep every column.

    Args:
        table: any DataFrame; columns are names or tuples of names.

    Returns:
        DataFrame with the same values and index, renamed columns.

    """
    def name(c):
        if isinstance(c, tuple):
            return tuple(name(x) for x in c)
        return _head(c)

    return table.rename(columns=lambda c: name(c)) if not isinstance(table.columns, pd.MultiIndex) else \
        table.set_axis(pd.MultiIndex.from_tuples([name(c) for c in table.columns]), axis=1)


def _metric_of(c):
    return c[-1] if isinstance(c, tuple) else c


def _sib(c, suffix):
    """The column ``c`` with ``suffix`` appended to its (last) name."""
    return c[:-1] + (c[-1] + suffix,) if isinstance(c, tuple) else c + suffix


def _hidden(c) -> bool:
    m = _metric_of(c)
    return isinstance(m, str) and (m == CLIP_SET or m.endswith(" " + CLIP_SET))


def _clip_set_of(columns, c):
    """The clip-set column serving metric column ``c`` (``M clip_set``, else ``clip_set`` of its group), or None."""
    present = set(columns)
    own = _sib(c, " " + CLIP_SET)
    shared = c[:-1] + (CLIP_SET,) if isinstance(c, tuple) else CLIP_SET
    return own if own in present else shared if shared in present else None


def _fmt(name, v) -> str:
    name = name[:-len(CI_LO)] if isinstance(name, str) and name.endswith((CI_LO, CI_HI)) else name
    if isinstance(v, str):
        return v
    if v is None or pd.isna(v):
        return ""
    if name in FORMATS:
        return FORMATS[name].format(v)
    if name in COUNT_COLUMNS or (isinstance(name, str) and name.endswith(" clips")) \
            or isinstance(v, (int, np.integer)):
        return f"{v:.0f}"
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _group_codes(table: pd.DataFrame, within):
    """``([rows] int group codes, [groups] descriptions)`` of the comparison groups of ``within``."""
    if within is None:
        return np.zeros(len(table), dtype=int), ["the table"]
    levels = [within] if isinstance(within, str) else list(within)
    keys = pd.MultiIndex.from_arrays([table.index.get_level_values(lv) for lv in levels])
    codes, uniq = pd.factorize(keys)
    return codes, [", ".join(f"{lv} {v}" for lv, v in zip(levels, key)) for key in uniq]


def _best(table: pd.DataFrame, within=None):
    """Best values and clip-set conflicts of every metric column.

    Returns:
        ``(flags, conflict_rows, notes)``: ``flags`` ``[rows, columns]`` bool (True at every value of
        a group whose displayed text equals the group's best; none when every row of a group of
        several shows the same value, since then no row is better), ``conflict_rows`` ``[rows]`` bool
        (rows of a group whose clip sets differ for some metric column), ``notes`` the descriptions
        of those groups, in order.

    """
    flags = np.zeros(table.shape, dtype=bool)
    conflict = np.zeros(len(table), dtype=bool)
    notes: list[str] = []
    if table.empty:
        return flags, conflict, notes
    codes, names = _group_codes(table, within)
    groups = [np.flatnonzero(codes == g) for g in range(len(names))]
    per_metric = any(_hidden(c) and _metric_of(c) != CLIP_SET for c in table.columns)
    for j, c in enumerate(table.columns):
        d = _direction(_metric_of(c))
        if d is None:
            continue
        raw = pd.to_numeric(table.iloc[:, j], errors="coerce").to_numpy(dtype=float)
        key = np.where(np.isnan(raw), -np.inf, raw if d else -raw)
        cs_col = _clip_set_of(table.columns, c)
        sets = None if cs_col is None else table[cs_col].to_numpy(dtype=object)
        for g, rows in enumerate(groups):
            rows = rows[~np.isnan(raw[rows])]
            if not len(rows):
                continue
            if sets is not None and len({("" if pd.isna(s) else str(s)) for s in sets[rows]}) > 1:
                conflict[rows] = True
                where = [str(c[0])] if isinstance(c, tuple) and len(c) > 1 else []
                if per_metric:  # some metrics have clip sets of their own: name the metric
                    where.append(str(_metric_of(c)))
                note = names[g] + (f" ({' · '.join(where)})" if where else "")
                if note not in notes:
                    notes.append(note)
                continue
            best = _fmt(_metric_of(c), raw[rows[np.argmax(key[rows])]])
            tied = np.array([_fmt(_metric_of(c), raw[i]) == best for i in rows])
            if len(rows) > 1 and tied.all():  # every row shows the same value: none is better
                continue
            flags[rows, j] = tied
    return flags, conflict, notes


def best_rows(table: pd.DataFrame, within=None) -> dict:
    """For each metric column, the index label of its best value (by the metric's direction).

    Ties (equal displayed text, see the module docstring) are all best; without ``within`` the
    first of them is returned. A group whose ``clip_set`` values differ has no best value, and a
    column without any is left out.

    Args:
        table: a table of :mod:`audiointerp.tables` (or any DataFrame with metric columns).
        within: index level name(s); with it, each value is a list of the labels of every best
            row of every group of rows sharing those levels.

    Returns:
        ``{column: label}``, or ``{column: [labels]}`` with ``within``.

    """
    flags = _best(table, within)[0]
    out = {}
    for j, c in enumerate(table.columns):
        labels = list(table.index[flags[:, j]])
        if labels:
            out[c] = labels if within is not None else labels[0]
    return out


def _layout(table: pd.DataFrame, ci: str | None, best_within, bold, ci_text, esc=str):
    """Shared by the renderers: displayed columns, cell strings (CI merged into the mean), notes."""
    cols = list(table.columns)
    present = set(cols)
    merged = set()
    for c in cols:
        if ci and (_sib(c, CI_LO) in present and _sib(c, CI_HI) in present):
            merged |= {_sib(c, CI_LO), _sib(c, CI_HI)}
    shown = [c for c in cols if c not in merged and not _hidden(c)]
    flags, conflict, notes = _best(table, best_within)
    position = {c: j for j, c in enumerate(cols)}

    def texts(c):
        m = _metric_of(c)
        return [esc(_fmt(m, v)) for v in table[c].tolist()]

    columns = []
    for c in shown:
        cells = texts(c)
        cells = [bold(x) if x and f else x for x, f in zip(cells, flags[:, position[c]])]
        if ci and _sib(c, CI_LO) in merged:
            cells = [x + ci_text(lo, hi) if x and lo and hi else x
                     for x, lo, hi in zip(cells, texts(_sib(c, CI_LO)), texts(_sib(c, CI_HI)))]
        columns.append(cells)
    body = []
    for i, label in enumerate(table.index.tolist()):
        labels = [str(x) for x in (label if isinstance(label, tuple) else (label,))]
        if conflict[i]:
            labels[-1] += " " + DAGGER
        body.append(([esc(x) for x in labels], [col[i] for col in columns]))
    idx_names = [esc(n or "") for n in table.index.names]
    note = (f"{DAGGER} clip sets differ within {'; '.join(notes)}: no best value marked "
            "(those rows average different clips)") if notes else ""
    return idx_names, shown, body, note


def to_markdown(table: pd.DataFrame, title: str | None = None, *, ci: str | None = "bracket",
                best_within=None) -> str:
    """Markdown table: ↑/↓ in the headers, the best mean of each metric column in bold.

    Best values and the clip-set rule as in the module docstring; ``clip_set`` columns are not
    shown. A line under the table names the groups whose clip sets differ (rows marked †).

    Args:
        table: a table of :mod:`audiointerp.tables` (metric columns ``M`` with optional
            ``M lo``/``M hi``; flat or (group, name) MultiIndex columns).
        title: bold line above the table.
        ci: ``"bracket"`` shows ``mean [lo, hi]`` in one cell; None shows the columns as they are.
        best_within: index level name(s) within which the best value is marked (default: whole column).

    Returns:
        the Markdown text (no trailing newline).

    """
    idx_names, shown, body, note = _layout(table, ci, best_within, lambda s: f"**{s}**",
                                           lambda lo, hi: f" [{lo}, {hi}]")

    def head(c):
        return " ".join(_head(p) for p in (c if isinstance(c, tuple) else (c,)))

    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(idx_names + [head(c) for c in shown]) + " |")
    lines.append("|" + "---|" * (len(idx_names) + len(shown)))
    for labels, cells in body:
        lines.append("| " + " | ".join(labels + cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines)


_TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
              "↑": r"$\uparrow$", "↓": r"$\downarrow$", "·": "--", "×": r"$\times$", "≥": r"$\geq$",
              DAGGER: r"$^\dagger$"}


def _tex(s) -> str:
    return "".join(_TEX_CHARS.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, title: str | None = None, *, label: str | None = None,
             ci: str | None = "bracket", best_within=None) -> str:
    r"""LaTeX ``table`` (pandas ``to_latex``: booktabs ``tabular``, in a ``\resizebox`` to the text width).

    Headers carry ``$\uparrow$``/``$\downarrow$``, best means are ``\textbf`` (rules of the module
    docstring), cells are ``mean [lo, hi]``, special characters are escaped (plain ASCII + math
    mode, compiles with pdflatex); rows of a group whose clip sets differ carry ``$^\dagger$`` and a
    footnote-size line under the tabular names those groups. Needs ``\usepackage{booktabs,graphicx}``.

    Args:
        table: as :func:`to_markdown`.
        title: as :func:`to_markdown` (the ``\caption``).
        label: gives ``\label{...}``.
        ci: as :func:`to_markdown`.
        best_within: as :func:`to_markdown`.

    Returns:
        the LaTeX text (no trailing newline).

    """
    idx_names, shown, body, note = _layout(table, ci, best_within, lambda s: rf"\textbf{{{s}}}",
                                           lambda lo, hi: f" [{lo}, {hi}]", esc=_tex)
    heads = [c if isinstance(c, tuple) else (c,) for c in shown]
    heads = [tuple(_tex(p) for p in h[:-1]) + (_tex(_head(h[-1])),) for h in heads]
    columns = pd.MultiIndex.from_tuples(heads) if len(heads[0]) > 1 else pd.Index([h[0] for h in heads])
    rows = pd.MultiIndex.from_tuples([tuple(lb) for lb, _ in body], names=idx_names) if len(idx_names) > 1 \
        else pd.Index([lb[0] for lb, _ in body], name=idx_names[0])
    cells = pd.DataFrame([c for _, c in body], index=rows, columns=columns)
    tex = cells.to_latex(escape=False, caption=_tex(title) if title else None, label=label, position="htbp",
                         column_format="l" * len(idx_names) + "r" * len(shown), multicolumn=True,
                         multicolumn_format="c", multirow=False)  # pandas: booktabs rules
    tex = tex.replace("\\begin{tabular}", "\\centering\n\\resizebox{\\textwidth}{!}{%\n\\begin{tabular}", 1)
    end = "\\end{tabular}}"
    if note:
        end += "\n\\par\\smallskip{\\footnotesize " + _tex(note) + "}"
    tex = tex.replace("\\end{tabular}", end, 1)
    return "% generated by audiointerp.tables; needs \\usepackage{booktabs,graphicx}\n" + tex.strip()
