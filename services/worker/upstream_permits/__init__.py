"""Account-wide upstream permits: a provider's plan concurrency shared by every worker through Redis.

Not tied to one provider: any pooled upstream with a per-account concurrent-generation limit takes
a permit per live context from :class:`AccountLimit` (policy in :mod:`.account`, permits on credit
in :mod:`.credit`, an unreachable Redis in :mod:`.unreachable`, its Lua in :mod:`.scripts`, as the
gateway keeps its own scripts beside their callers).
"""

from .account import AccountLimit, account_id, tenant_tag

__all__ = ["AccountLimit", "account_id", "tenant_tag"]
