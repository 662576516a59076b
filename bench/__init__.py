"""Benchmark harness: a load generator for any IRC server, and a side-by-side runner.

``python -m bench.loadgen`` runs one scenario against a server on a host and port;
``python -m bench.compare`` starts our server, miniircd and ngIRCd itself and runs every
scenario against each.  See docs/PERFORMANCE.md for the results and the exact commands.
"""
