"""Helpers shared by the tests: free ports, real processes cleaned up by pid, HTTP clients."""
