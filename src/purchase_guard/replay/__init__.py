"""QA replay suite: scenario files (YAML + recordings) replayed against a live guard, with a report.

schema.py reads and validates scenario files, audio.py turns audio specs into recordings,
target.py starts or reaches a guard, engine.py plays one scenario, report.py writes the
HTML / JUnit output and runner.py is the `purchase-guard replay` command. docs/replay.md
describes the file format.
"""
