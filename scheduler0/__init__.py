"""
Scheduler0: a distributed cron-job server on Twisted, Raft and SQLite.
"""

__version__ = "0.2.0"
