"""Loaded by Python at start-up when this folder is on PYTHONPATH (see tests/image_closure.py):
with KPO_IMAGE_REQUIREMENTS set, the process sees only what the rendered project's image holds."""

import os
import sys
from pathlib import Path

if os.environ.get("KPO_IMAGE_REQUIREMENTS"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import image_closure

    sys.path.pop(0)
    image_closure.install(Path(os.environ["KPO_IMAGE_REQUIREMENTS"]))
