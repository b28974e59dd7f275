"""Put the repository on sys.path so tests and benchmarks run from a checkout without installing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
