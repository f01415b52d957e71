"""Put the project root on sys.path so tests import `include` and `scripts` as the DAGs do."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "docker: builds the image; needs a Docker engine and registry access")
