"""What a job is: pure data (the job and its states, the spec table, executors,
the remote layout, loaded from the collection's launch contract).

Imports nothing of tsubmit above it: only the top-level leaves (errors, paths).
"""
