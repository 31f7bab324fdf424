"""The search: Optuna proposes architectures, the supernet scores them, a latency table times them.

``config`` (the settings), ``setup`` (space, table, supernet and scorer for a run),
``storage`` and ``study`` (where trials live), ``study_settings`` (the settings a study keeps),
``workers`` and ``budget`` (many processes on one study), ``samplers``, ``objectives``
(what can be minimised, and how each is predicted), ``trial`` (one trial: ``TrialObjective``), ``run``
(the command, ``python -m nas.search``), ``results`` (trials and the Pareto
front as tables), ``summary`` (the report at the end), ``export`` and ``plot`` (the commands ``nas-export`` and
``nas-plot``).
"""
