"""Cluster layer over Redis: agent, registry, fenced leader election, polycorn-ctl."""
