"""
Storage: commands, the replicated SQLite state machine, the command log, the
single-node proposer and node-local execution records.
"""
