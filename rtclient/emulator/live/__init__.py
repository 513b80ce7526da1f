"""GPT-Live (``gpt-live-1``) in the emulator: the same server also speaks the Live API.

(Documented in full below once the pieces are in.)
"""

from .rules import LiveRules
from .session import LiveSession

__all__ = ["LiveRules", "LiveSession"]
