"""polycorn-ctl dashboard: one live page of a cluster, served by the standard library.

`cli.py` checks the options and runs it; `hub.py` reads the registry once for every
open page (the HAProxy sync's RegistryFeed) and keeps the recent events; `server.py`
answers HTTP (page, JSON, Server-Sent Events, guarded actions); `guard.py` holds the
bind, Host, token and origin checks; `rates.py` turns the nodes' Prometheus counters
into requests/s. The page itself is static/ (plain HTML, CSS and JS; no build step).
"""
