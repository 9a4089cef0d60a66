"""
The cluster: Raft wired into a node, peer HTTP between nodes, leases, job
ownership and the execution-log fan-in (SPEC §7 and §8).
"""
