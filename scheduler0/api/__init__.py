"""
The HTTP API (SPEC §5): a Klein application generated from one route table.
"""
