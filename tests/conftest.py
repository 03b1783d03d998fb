"""Every test runs offline, with Prefect state in a throwaway home and no analytics."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="yume-data-tests-prefect-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
