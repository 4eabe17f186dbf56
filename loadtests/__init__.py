"""Load tests for Polycorn: Locust users (locustfile.py) and the chaos runner (chaos.py).

Two halves that never share a process: the locust-side modules (locustfile,
timeline, retry_policy, thresholds, targets) run inside Locust, which
monkey-patches with gevent; the runner-side modules (chaos, scenario, cluster,
faults, locust_run, report, plot) drive Locust as a subprocess; their processes run
under ha/process_tracker.py and their Redis comes from ha/redis_launcher.py.
"""
