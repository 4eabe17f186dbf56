"""The registry-driven HAProxy front (`polycorn-ctl haproxy config|sync|status`).

SmartStack's model: the agents register the nodes (Nerve), and a sync process beside
each HAProxy (Synapse) keeps one backend of `server-template` slots in step with the
registry through HAProxy's runtime API. The decision is a pure function
(reconcile.py); the sync only reads Redis and holds no authority.
"""
