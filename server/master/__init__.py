"""The master, as composed parts with one job each (see arbiter.py for the wiring).

system.py   the OS seam (fork, kill, waitpid, clocks): real by default, fake in tests
state.py    states, the halt, worker records, and the small holders parts share
loop.py     the loop and its signal table
pool.py     the workers: spawn, reap, timeouts, readiness, early deaths
reload.py   HUP and --reload, health-gated
successor.py  USR2: the successor handshake, status file and rollback
sidecars.py   facts out to the sidecars, their commands in
stop.py     deregistration window, graceful and quick stop, kill everything
peers.py    the hand-off path and the --masters group
arbiter.py  the composition root, and the object hooks receive as `server`
"""
