"""The pools the pod tasks run in count deferred tasks, so that they cap the pods that run at once.

Every pod task is deferrable: while its pod runs, the task is deferred and holds no worker slot.
Airflow counts deferred tasks in a pool only when the pool's ``include_deferred`` is true (it is
false by default), so a pool without it caps nothing while pods run. Nothing the Astro CLI offers
sets it: `astro dev start` writes the pools of airflow_settings.yaml with ``include_deferred``
false on every start, and `astro deployment pool create|update` have no such option.

So this plugin sets it from inside Airflow, in the components that own the database:
- when the scheduler, the triggerer or the dag processor starts, each pool of this project's
  clusters is created if missing (its slots from include/remote_cluster.py, REMOTE_POOL_SLOTS)
  and gets ``include_deferred`` turned on; the slots of an existing pool are left as they are
  (set in the UI, airflow_settings.yaml or by scripts/deploy.sh);
- when the scheduler starts a DAG run, it turns the flag back on if anything turned it off since
  (`astro dev start` does, right after the scheduler started), in the scheduler's own transaction,
  before any task of that run is queued.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parent.parent


@functools.cache
def project_pools() -> dict[str, tuple[int, str]]:
    """{pool: (slots, description)} of every cluster of this project (include/, clusters/); read
    once per process (a new cluster reaches the deployment with a new image, so a restart)."""
    if str(PROJECT) not in sys.path:
        sys.path.append(str(PROJECT))
    from include import remote_cluster as rc

    pools = {rc.REMOTE_POOL: (rc.REMOTE_POOL_SLOTS, f"Caps concurrent pods on the remote cluster {rc.CLUSTER_NAME}")}
    if (PROJECT / "clusters" / "__init__.py").is_file():
        import clusters

        for name in clusters.names()[1:]:
            settings = clusters.cluster(name).settings
            pools.setdefault(settings.REMOTE_POOL, (settings.REMOTE_POOL_SLOTS,
                                                    f"Caps concurrent pods on the remote cluster {name}"))
    return pools


def ensure_pools(session, pools: dict[str, tuple[int, str]], create: bool) -> list[str]:
    """Turn include_deferred on in these pools (creating missing ones if ``create``); what was done."""
    from airflow.models.pool import Pool
    from sqlalchemy import select

    done = []
    for name, (slots, description) in pools.items():
        pool = session.scalar(select(Pool).filter_by(pool=name))
        if pool is None and create:
            session.add(Pool(pool=name, slots=slots, description=description, include_deferred=True))
            done.append(f"created pool {name} ({slots} slots, counting deferred tasks)")
        elif pool is not None and not pool.include_deferred:
            pool.include_deferred = True
            done.append(f"pool {name} now counts deferred tasks (include_deferred was off)")
    return done


@hookimpl
def on_starting(component) -> None:
    from airflow.jobs.job import Job

    if not isinstance(component, Job):  # a task process: no database here
        return
    from airflow.utils.session import create_session
    from sqlalchemy.exc import IntegrityError

    for attempt in range(2):  # the scheduler, triggerer and dag processor start together
        try:
            with create_session() as session:
                for line in ensure_pools(session, project_pools(), create=True):
                    log.info("remote_kpo_pools: %s", line)
            return
        except IntegrityError:
            if attempt:
                raise


@hookimpl
def on_dag_run_running(dag_run, msg: str) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:
        return
    for line in ensure_pools(session, project_pools(), create=False):
        log.warning("remote_kpo_pools: %s", line)


class RemoteKpoPools(AirflowPlugin):
    name = "remote_kpo_pools"
    listeners = [sys.modules[__name__]]
