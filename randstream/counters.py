"""What the server refused, by reason, and the connections it holds: what /metrics reads."""

from __future__ import annotations

import logging


class Counters:
    """Client input rejected and connections refused, by reason; the connections open and
    their cap. Admission (admission.py) and the hooks into engine.io (transport/hooks.py)
    count here; metrics.py reads the four attributes at scrape time."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        # Engine.IO sessions and other long-lived connections (event streams), as
        # admission.py counts them from engine.io's connect and disconnect events: the
        # library's own table keeps closed sessions until its service task reaps them.
        self.open_connections = 0
        self.rejected: dict[str, int] = {}  # client input refused, by reason
        self.refused: dict[str, int] = {}  # connections refused or closed, by reason
        self._logged: set[str] = set()

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def log_once(self, log: logging.Logger, key: str, message: str, *args) -> None:
        """The first of each kind, as one line; the metrics count the rest."""
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message + " (further ones are only counted in /metrics)", *args)
