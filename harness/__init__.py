"""
The test and benchmark harness: real-process launchers, fault injection,
fuzzers and fakes. Used from a checkout of the repository; not installed.
"""
