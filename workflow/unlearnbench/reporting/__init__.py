"""Tables and figures of the study, built from the metrics files the workflow writes.

``loaders`` turns result files into tidy pandas frames (one row per observation) and
``frontiers`` the frontier files (every point, the operating points, the paired data of each
claim); ``claims`` judges the config's claims (two-level bootstrap, Holm); ``tables`` and
``protocol_tables`` aggregate over seeds, ``render`` writes CSV, Markdown, LaTeX and HTML;
``plotting`` holds the shared figure style and deterministic saving, ``figures_frontier``,
``figures_unlearning`` and ``figures_studies`` draw the figures. Nothing here imports torch:
report jobs start in a second.

Real-world secrets arrive masked and are checked again before any table is written: no
unmasked e-mail address or phone number reaches a report.
"""
