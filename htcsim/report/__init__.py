"""What a person reads of a schedule: tables, files, figures and the HTML comparison.

``results`` writes a run's files (Parquet/CSV/SWF/JSON), ``plots`` its figures,
``comparison_plots`` and ``html`` the offline page comparing runs. A layer
above the drivers: it reads schedules and metrics, and never runs a replay.
"""
