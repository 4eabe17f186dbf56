"""Configuration for cycleapp: post_request and the access log write to $CYCLE_NOTES."""

import os

NOTES = os.environ["CYCLE_NOTES"]
accesslog = NOTES
access_log_format = "access %(U)s %(s)s %(B)s"


def post_request(worker, req, environ, resp):
    with open(NOTES, "a") as f:
        f.write(f"post {req.path} {resp.status_code} {resp.sent}\n")
