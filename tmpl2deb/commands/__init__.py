"""The subcommands, one module per group: each has the typed arguments of its subcommands,
their parsers (add_VERB) and what they run (run_VERB); common.py what they share, render.py how
results are shown."""
