"""The `astro dev init` DAG checks: every DAG imports cleanly, has tags and retries >= 2.

They read this project's dags/ folder, wherever it is: the result is the same in the Astro
container (`astro dev pytest`) and outside it (`pytest tests`), and finding no DAG fails.
"""

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag  # Airflow 3.3's home of DagBag

APPROVED_TAGS: set[str] = set()
PROJECT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT / "dags"


@contextmanager
def suppress_logging(namespace):
    logger = logging.getLogger(namespace)
    old_value = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = old_value


def strip_path_prefix(path):
    return os.path.relpath(path, PROJECT)


def dag_bag():
    with suppress_logging("airflow"):
        return DagBag(dag_folder=DAGS_FOLDER)


def get_import_errors():
    # (None, None) first so a test object exists even when there is nothing to report.
    return [(None, None)] + [(strip_path_prefix(k), v.strip()) for k, v in dag_bag().import_errors.items()]


def get_dags():
    return [(k, v, strip_path_prefix(v.fileloc)) for k, v in dag_bag().dags.items()]


def test_dags_are_found():
    """Without this, a run that finds no DAG would skip every check below and still be green."""
    files = sorted(p.name for p in DAGS_FOLDER.glob("*.py"))
    found = {Path(dag.fileloc).name for dag in dag_bag().dags.values()}
    assert files and found == set(files), f"DAG files {files}, loaded from {sorted(found)}"


@pytest.mark.parametrize("rel_path,rv", get_import_errors(), ids=[x[0] for x in get_import_errors()])
def test_file_imports(rel_path, rv):
    if rel_path and rv:
        raise Exception(f"{rel_path} failed to import with message \n {rv}")


@pytest.mark.parametrize("dag_id,dag,fileloc", get_dags(), ids=[x[2] for x in get_dags()])
def test_dag_tags(dag_id, dag, fileloc):
    assert dag.tags, f"{dag_id} in {fileloc} has no tags"
    if APPROVED_TAGS:
        assert not set(dag.tags) - APPROVED_TAGS


@pytest.mark.parametrize("dag_id,dag,fileloc", get_dags(), ids=[x[2] for x in get_dags()])
def test_dag_retries(dag_id, dag, fileloc):
    assert dag.default_args.get("retries", 0) >= 2, f"{dag_id} in {fileloc} must have task retries >= 2."
