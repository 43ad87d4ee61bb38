"""A synthetic fitness platform (the outside world of the lakehouse): it writes the app's raw
exports to a landing zone and knows the true preferences behind them (see README.md)."""

from .config import SIZES, SimConfig
from .generate import generate, state_at
from .truth import Context, TruePreferences

__all__ = ["SIZES", "SimConfig", "generate", "state_at", "Context", "TruePreferences"]
