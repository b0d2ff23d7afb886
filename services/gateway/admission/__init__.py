"""Per-key limits at context start and settlement at context end (see limiter.py)."""

from gateway.admission.limiter import KeyAdmission, Lease, charge
from gateway.admission.usage import read_usage

__all__ = ["KeyAdmission", "Lease", "charge", "read_usage"]
