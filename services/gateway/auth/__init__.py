"""Who may call the gateway: client keys, signed browser tokens, the admin token.

The contract other modules code against::

    principal = await authenticate(request)   # raises shared.errors.Unauthorized
    await require_admin(request)              # raises Unauthorized / Forbidden
"""

from gateway.auth.guard import authenticate, require_admin
from gateway.auth.principal import DEV_KEY_ID, DEV_PRINCIPAL, Principal

__all__ = ["DEV_KEY_ID", "DEV_PRINCIPAL", "Principal", "authenticate", "require_admin"]
