"""The progress bar of a run (tqdm on stderr), fed by the driver."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from tqdm.auto import tqdm

__all__ = ["Progress"]

log = logging.getLogger(__name__)


class Progress:
    """Counts outcomes; shows a tqdm bar on stderr unless quiet.

    The number of products is only known as discovery answers, so the bar counts outcomes
    and their rate rather than a fraction of a total.
    """

    def __init__(self, enabled: bool):
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self.pending = 0
        self.last_poll = 0.0
        self.bar = None
        if enabled:
            self.bar = tqdm(total=None, unit="cutout", desc="mastcut", dynamic_ncols=True)

    def record(self, status: str) -> None:
        self.counts[status] += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def poll(self, pending: int, in_flight: Callable[[], int]) -> None:
        """Note the network tasks waiting or running, and (at most 4 times a second) ask the
        scheduler how many requests hold a lease right now."""
        self.pending = pending
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self.last_poll >= 0.25:
            self.last_poll = now
            try:
                self.in_flight = in_flight()
            except Exception:  # noqa: BLE001 - a progress figure must never stop a run
                log.debug("could not read the number of requests in flight", exc_info=True)
            self._postfix()
            self.bar.refresh()

    def _postfix(self) -> None:
        c = self.counts
        self.bar.set_postfix_str(f"done={c['done']} no_cov={c['no_coverage']} failed={c['failed']} "
                                 f"invalid={c['invalid']} in_flight={self.in_flight} queued={self.pending}",
                                 refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
