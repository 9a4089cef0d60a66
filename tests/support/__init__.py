"""
Fakes and helpers shared by more than one test module, one module per room
(api, cli, cluster, dashboard, executor, raft, scheduler, state). A test
module imports them from here, never from another test module. Nothing here
is a test: trial collects only the test_*.py modules.
"""
