"""Developer commands: ``python -m scripts.run_stack`` (``make run``) and its helpers."""
