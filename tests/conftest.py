"""Make the repository root importable (``models``, ``bench``, ``kernels``) however pytest is launched."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
