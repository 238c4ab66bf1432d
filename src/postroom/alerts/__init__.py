"""Alerts: rules over what the ledger, the queue and the breakers report, a history of firings
(table ``alerts``), sinks that tell operators, and the campaign auto-pause.

``readings`` measures, ``rules`` judges (pure), ``history`` records and deduplicates,
``sinks`` tells, ``monitor`` runs the loop. ``build_monitor`` wires them from settings.
"""
