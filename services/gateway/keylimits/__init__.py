"""Per-key limits at context start and settlement at context end (see limiter.py)."""

from gateway.keylimits.limiter import KeyLimits, Lease, charge
from gateway.keylimits.usage import read_usage

__all__ = ["KeyLimits", "Lease", "charge", "read_usage"]
