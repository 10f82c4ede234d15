"""What the emulator's product modules raise for input the real service would refuse."""

from __future__ import annotations


class BadRequest(ValueError):
    """Invalid request parameters; the server answers HTTP 400 with this message."""
