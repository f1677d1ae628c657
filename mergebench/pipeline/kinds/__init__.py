"""Stage kinds: each module has `run(ctx)` that writes the stage's output into ctx.out.

Imported lazily by name in the stage process only, so the orchestrator needs no heavy dependency.
"""
