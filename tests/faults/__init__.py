"""Fault tooling and tests: a real 3-broker cluster, kill -9, SIGSTOP, a TCP proxy, a checker."""
