"""Prometheus metrics of a node (issue 17): a sink of server/instrument writing per-process
slot files, and a sidecar that adds them up and serves GET /metrics."""
