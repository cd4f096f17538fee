"""No string from the data or the URL reaches Markdown unescaped, on any page.

Every text field of a real DuckDB file (dataset names, sources, variants, model references, prompts,
responses, reject reasons, run commands, import sources) and the URL's query parameters carry Markdown/
HTML that would render as a remote image (a tracking pixel), a link, raw HTML, bold or math. Every page
is walked with AppTest and every string that Streamlit renders as Markdown (markdown, captions, alerts,
headings, widget labels and help, radio / segmented options, expander and tab labels, progress text) is
parsed with markdown-it: none may contain an image, a link or HTML, nor the hostile literals verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from analysis.data import synthetic
from analysis.storage import store

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")

HOSTILE = ["![x](http://evil/x.png)", "<img src=x>", "[link](javascript:alert(1))", "**bold**", "$x$"]
H = " ".join(HOSTILE)  # prefixed to every text value in the DB
LITERALS = HOSTILE + ["http://evil", "javascript:"]
MD = MarkdownIt("commonmark").enable("table").enable("strikethrough")

# (node type, proto fields) of elements whose strings Streamlit renders as Markdown. st.text, st.code,
# st.json, dataframes, charts and selectbox/multiselect options render literally and are not listed.
MARKDOWN_FIELDS = {"markdown": ("body",), "caption": ("body",), "alert": ("body",), "error": ("body",),
                   "warning": ("body",), "info": ("body",), "success": ("body",), "heading": ("body",),
                   "title": ("body",), "header": ("body",), "subheader": ("body",), "toast": ("body",),
                   "progress": ("text",), "metric": ("label", "help")}
LABEL_FIELDS = ("label", "help", "placeholder")
OPTION_TYPES = {"radio", "button_group", "segmented_control", "pills"}


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "seam.duckdb"
    synthetic.make_synthetic_db(path, 80, seed=21)
    p = H.replace("'", "''")
    with store.writer(path) as con:
        for table, cols in {"datasets": ["dataset", "source"], "samples": ["dataset", "source", "prompt", "gold"],
                            "rejects": ["dataset", "reason", "raw"], "models": ["model"],
                            "pm_scores": ["policy"], "rm_scores": ["reward"],
                            "rlhf_results": ["policy", "reward", "source"], "runs": ["command"]}.items():
            con.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = '{p} ' || {c}" for c in cols))
        con.execute(f"UPDATE responses SET text = '{p} ' || text, "
                    f"variant = CASE WHEN variant IN ('gold', 'policy') THEN variant ELSE '{p} ' || variant END")
        store.finalize(con)
        variants = [r[0] for r in con.execute("SELECT DISTINCT variant FROM responses WHERE variant LIKE '!%' "
                                              "ORDER BY 1").fetchall()]
        ids = [r[0] for r in con.execute("SELECT sample_id FROM samples ORDER BY 1 LIMIT 5").fetchall()]
    return path, variants, ids


def markdown_strings(at) -> list[tuple[str, str]]:
    """(element type, string) for every string of the rendered page that Streamlit treats as Markdown."""
    out = []

    def visit(node):
        ty = getattr(node, "type", "")
        proto = getattr(node, "proto", None)
        children = getattr(node, "children", None)
        if children is not None:  # a block: expander / tab / popover labels
            label = getattr(node, "label", None)
            if isinstance(label, str) and label:
                out.append((type(node).__name__, label))
            for child in children.values():
                visit(child)
            return
        if proto is None or ty in ("text", "code", "json", "exception", "arrow_data_frame", "dataframe",
                                   "plotly_chart", "unknown"):
            return
        fields = MARKDOWN_FIELDS.get(ty, LABEL_FIELDS)
        for f in fields:
            v = getattr(proto, f, None)
            if isinstance(v, str) and v:
                out.append((ty, v))
        if ty in OPTION_TYPES or proto.DESCRIPTOR.name in ("Radio", "ButtonGroup"):
            for o in getattr(proto, "options", []):
                out.append((ty + " option", o if isinstance(o, str) else getattr(o, "content", "")))

    for root in at._tree.children.values():
        visit(root)
    return out


def offences(at, where: str) -> list[str]:
    bad = []
    for ty, s in markdown_strings(at):
        tokens = MD.parse(s)
        kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
        found = sorted(kinds & {"image", "link_open", "html_inline", "html_block"})
        found += [lit for lit in LITERALS if lit in s]
        if found:
            bad.append(f"{where} / {ty}: {found} in {s!r}")
    return bad


def page(name: str, selection: dict | None = None, **query) -> AppTest:
    """A fresh session opened on `name` with `query` in the URL (as a shared link would)."""
    at = AppTest.from_file(MAIN, default_timeout=120)
    if selection:
        at.session_state["selection"] = selection
    at.run()
    at.query_params.update(query)
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, (name, [e.value for e in at.exception])
    return at


def test_no_data_or_url_string_reaches_markdown_unescaped(hostile_db, monkeypatch, tmp_path, label_button):
    db, variants, ids = hostile_db
    monkeypatch.setenv("SEAM_DB", str(db))
    monkeypatch.setenv("SEAM_LABELS", str(tmp_path / "labels.sqlite"))
    monkeypatch.setenv("SEAM_EXPORTS", str(tmp_path / "exports"))
    v = variants[0]
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    bad = offences(at, "overview")
    seen = {"overview": len(markdown_strings(at))}

    visits = [
        ("saturation", {"s_variant": v}),
        ("saturation", {"s_src": "proxy from scores", "s_variant": v}),
        ("distributions", {"d_variant": variants}),
        ("browser", {"b_q": H, "b_variant": variants, "b_only": "false"}),
        # an invalid regex from the URL: RE2's error message quotes the pattern
        ("browser", {"b_q": "(" + H.replace("**bold**", "bold"), "b_re": "true"}),
        ("spotcheck", {"annotator": H, "c_kind": "dataset", "c_variant": v, "c_n": "10"}),
        ("spotcheck", {"annotator": H, "c_kind": "policy", "c_n": "10"}),
        ("export", {"e_variant": v}),
        ("prompt_map", {"m_variant": v}),
        ("disagreement", {"w_variant": variants, "w_feat": "longer", "w_only": "false"}),
    ]
    for name, query in visits:
        at = page(name, **query)
        if name == "spotcheck" and any((b.key or "").startswith("lab_a|") for b in at.button):
            label_button(at, "a").click().run()  # the reveal shows variant names and model references
        bad += offences(at, f"{name} {sorted(query)}")
        seen[name] = len(markdown_strings(at))
        if query.get("b_re"):
            assert any("missing" in e.value and "evil" in e.value for e in at.error), \
                f"no regex error quoting the pattern to check: {[e.value for e in at.error]}"
    # hand-label disagreements, and a selection handed over from the prompt map (its origin names models)
    at = page("browser", b_mode="RM vs hand labels")
    bad += offences(at, "browser hand labels")
    for name in ("browser", "export"):
        at = page(name, selection={"ids": ids, "origin": f"prompt map ({v}, {H} × {H})"}, b_only="false",
                  e_variant=v)
        assert any(t.key == "use_sel" for t in at.toggle), f"{name}: no selection toggle to check"
        bad += offences(at, f"{name} with selection")
    assert all(n > 3 for n in seen.values()), f"a page rendered almost nothing to check: {seen}"
    assert not bad, "data or URL text reached Markdown unescaped:\n" + "\n".join(bad)
