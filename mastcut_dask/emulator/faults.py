"""Seeded, reproducible fault injection for the emulator.

``faults`` maps a fault name to a probability. For every admitted service request the plan draws
one uniform number from its own seeded generator and walks the faults in the fixed order of
:data:`FAULT_NAMES`, so each fault happens with exactly its probability and the same seed and
request order give the same faults.

=====================  ==================================================================
name                   what the client sees
=====================  ==================================================================
``503``                ``503 Service Temporarily Unavailable`` (HTML body, as Apache sends)
``504``                ``504 Gateway Timeout`` (HTML body)
``truncate``           the right headers, Content-Length of the whole reply, then about half
                       the bytes and a closed connection
``reset``              headers and part of the body, then a TCP reset (SO_LINGER 0)
``stall``              nothing at all for ``stall_seconds`` (longer than a client's read
                       timeout), then the normal reply; interrupted at once by ``stop()``
``nodata_transient``   ``{"msg": "Cutout Error: No FFIs found for input target. Cutout not
                       performed."}`` although the target has data (cutout endpoints only;
                       ZCut and HAPCut give their own no-data reply instead)
``badzip``             a corrupt zip with a 200 status (cutout endpoints only)
``zipslip``            a zip whose members are ``../evil.fits``, ``/abs/evil.fits`` and
                       ``sub/../../evil2.fits`` (cutout endpoints only)
``zipbomb``            a ~3 MiB zip of two members of 1.5 GiB each once inflated (cutout
                       endpoints only)
``html200``            an HTML error page with status 200
=====================  ==================================================================

A fault that only concerns cutout archives is still drawn on other endpoints (so the random
sequence does not depend on the mix of requests) but has no effect there; the request log
records it as ``fault=None`` in that case.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping

__all__ = ["FAULT_NAMES", "ARCHIVE_FAULTS", "FaultPlan", "parse_fault_option"]

FAULT_NAMES = ("503", "504", "truncate", "reset", "stall", "nodata_transient", "badzip",
               "zipslip", "zipbomb", "html200")
# Faults that change what a cutout endpoint returns; meaningless for JSON discovery endpoints.
ARCHIVE_FAULTS = frozenset({"nodata_transient", "badzip", "zipslip", "zipbomb"})


class FaultPlan:
    """Decides, request by request, which fault (if any) to inject.

    Parameters
    ----------
    faults : mapping of str to float, optional
        Fault name → probability in [0, 1]; the probabilities may sum to at most 1.
    seed : int
        Seed of the generator; the same seed and request order give the same faults.

    Raises
    ------
    ValueError
        For an unknown fault name, a probability outside [0, 1], or a total above 1.
    """

    def __init__(self, faults: Mapping[str, float] | None = None, seed: int = 0):
        probs: dict[str, float] = {}
        for name, p in (faults or {}).items():
            key = str(name)
            if key not in FAULT_NAMES:
                raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}")
            p = float(p)
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise ValueError(f"fault {key!r}: probability {p} is not in [0, 1]")
            probs[key] = p
        total = sum(probs.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {total}, more than 1")
        # Fixed order, whatever order the caller's mapping had.
        self._ordered = [(name, probs[name]) for name in FAULT_NAMES if probs.get(name, 0.0) > 0]
        self._seed = seed
        self._rng = random.Random(f"mastcut-faults-{seed}")
        self._lock = threading.Lock()

    @property
    def probabilities(self) -> dict[str, float]:
        """The configured non-zero probabilities."""
        return dict(self._ordered)

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if not self._ordered:
            return None
        with self._lock:
            u = self._rng.random()
        edge = 0.0
        for name, p in self._ordered:
            edge += p
            if u < edge:
                return name
        return None

    def reset(self) -> None:
        """Start the random sequence again from the seed."""
        with self._lock:
            self._rng = random.Random(f"mastcut-faults-{self._seed}")


def parse_fault_option(text: str) -> tuple[str, float]:
    """Parse a command-line ``NAME=P`` fault option.

    Raises
    ------
    ValueError
        When the text is not ``NAME=P`` with a known name and a number.
    """
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise ValueError(f"expected NAME=P, got {text!r}")
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}")
    return name, float(value)
