"""Drop-in endpoints for clients people already have: ElevenLabs (WebSocket and HTTP) and OpenAI speech.

Every endpoint here is a thin protocol adapter over :class:`gateway.session.SynthesisSession`; the
queue, workers, retries and stale-audio rules are the session's. ``routes.add_routes`` mounts them.
"""
