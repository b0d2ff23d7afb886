"""Who may call the gateway: client keys, signed browser tokens, the admin token.

The contract other modules code against (import the modules, not this package: the guard reads the
app's services, which hold this package's key store and token signer, so re-exporting the guard here
would make any import of ``gateway.auth.*`` import the whole gateway first)::

    from gateway.auth.guard import authenticate, require_admin
    principal = await authenticate(request)   # raises shared.errors.Unauthorized
    await require_admin(request)              # raises Unauthorized / Forbidden

``gateway.auth.principal`` is the identity (:class:`Principal`, the dev-mode ``DEV_PRINCIPAL``).
"""
