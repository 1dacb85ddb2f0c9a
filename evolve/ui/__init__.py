"""`sds ui`: the population database in a web browser, read-only, on loopback by default.

Pages: the runs (compare several), a run (best-so-far, outcomes, failing stages, operator
and model shares, islands; live while it runs), its lineage tree (runtimes or programs,
10,000 nodes and more, drawn in the browser), and each runtime, program and evaluation
(code, diff against the parent, stages, per-workload figures, LLM prompt and reply).

    >>> from evolve.ui.server import serve
    >>> serve("sqlite:///results/sds.db", port=8765)      # what `sds ui` runs

The web parts need the `ui` extra (`pip install 'sds-evolve[ui]'`): Flask, Pygments and
the Waitress server. See docs/UI.md.
"""
