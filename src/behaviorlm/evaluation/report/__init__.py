"""``behaviorlm report RUN_DIR``: one page that shows how every model did on a run folder, and why.

It mirrors the paper's Table 1 (six metrics on both protocols), Table 5 (ablations), Figure 1a (long-tail
distribution), 1b (embedding map), 1c/4 (anchor vs tail accuracy), 3b (few-shot curve) and 5 (sample
efficiency), plus a per-behavior accuracy table, anchor/tail confusion matrices and the B-Tuning
selection accounting. Only ``RUN/data/stats.json`` is required: each section is rendered when its inputs
exist, and the missing ones are listed in a "not run" note.

Writes ``RUN/report.html`` (self-contained: inline CSS, figures as inline base64 PNG, no scripts, opens
offline) and ``RUN/report.md`` (Markdown tables; figures saved as ``RUN/figures/*.png``).

The package reads in this order: ``artifacts`` (loading the run folder), ``tables`` (table builders),
``figures`` (figure builders), then ``render`` (the sections that combine them, the HTML/Markdown writers
and the CLI verb).
"""

from __future__ import annotations

from behaviorlm.evaluation.report.artifacts import RunArtifacts, load_run
from behaviorlm.evaluation.report.render import configure_parser, render_report, run

__all__ = ["RunArtifacts", "configure_parser", "load_run", "render_report", "run"]
