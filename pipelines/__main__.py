"""``python -m pipelines COMMAND RUN ...``: the same commands as ``t3vis`` (extract, importance, project, pipeline)."""

import sys

from t3vis.cli import main

if __name__ == "__main__":
    sys.exit(main())
