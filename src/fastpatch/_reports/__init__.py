"""Reports that leave the process, one module per stage:

* ``build``: this process's Stats as a report (what it holds, and the
  process it describes);
* ``schema``: the JSON report (version 1), checking it, and the ``Report``
  that carries a report to a format;
* ``definitions``: one definition per module, qualname and first line,
  added up exactly from any number of Stats;
* ``merge``: reading report files, and adding the reports of many
  processes up exactly;
* ``table``: ``fastpatch.report()``, and the one renderer of every table;
* ``formats``: the registry of report formats (text, json, pstats);
* ``output``: output paths, ``{pid}``, the atomic write and the rule for
  processes that share a name;
* ``exporter``: what the exit handler feeds, the report writer first.

``import fastpatch`` imports none of them: the command line, the
activation and the exit handler import what they need when they need it.
"""
