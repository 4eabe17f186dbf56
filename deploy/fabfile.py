"""Entry for `fab -r deploy <task> -H host1,host2` from the project root.

The tasks live in polycorn.deploy.tasks; deploy/fabric.json (Fabric's project
config, found beside this file) selects the executor that runs each task once
for all hosts and turns stdin off for every remote command.
"""

from polycorn.deploy.tasks import cleanup, deploy, rollback, setup, status

__all__ = ["cleanup", "deploy", "rollback", "setup", "status"]
