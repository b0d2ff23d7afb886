"""Benchmarks: the queue hop's cost against a direct upstream socket, and the capacity of one box.

``python -m bench.run [--short]`` runs everything (see bench/README.md); ``python -m bench.ttfa``
prints time-to-first-audio through the full path against a client connected straight to the emulator.
"""
