"""Counts model loads, in every Python process that starts with this folder on its PYTHONPATH (as `sitecustomize`,
which Python imports at start-up): each construction of a stage's model holder appends "<stage> <pid>" to the file
MODEL_LOADS_LOG names. It wraps the classes as their modules are imported and changes nothing else, so the same
count runs against any version of the code (`benchmarks/bench_ray_actors.py`, `tests/test_ray_actors.py`).
Ray's workers inherit their node's environment: a cluster started with this folder on its PYTHONPATH counts there.
"""

import functools
import importlib.abc
import importlib.machinery
import os
import sys

# module -> (class whose construction loads the model, stage)
MODEL_HOLDERS = {
    "captioning.backends.transformers_backend": ("TransformersBackend", "captioning"),
    "captioning.backends.vllm_backend": ("VLLMBackend", "captioning"),
    "filtering.native": ("NativeScorer", "scoring"),
    "filtering.vbench_backend": ("VBenchScorer", "scoring"),
    "synthesis.generate": ("WanWorker", "synthesis"),
}


def _count(cls, stage: str, log: str) -> None:
    init = cls.__init__

    @functools.wraps(init)
    def counted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        with open(log, "a") as f:  # one short append per line: lines of concurrent processes do not mix
            f.write(f"{stage} {os.getpid()}\n")

    cls.__init__ = counted


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, log: str):
        self.log = log

    def find_spec(self, name, path, target=None):
        if name not in MODEL_HOLDERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        cls_name, stage = MODEL_HOLDERS[name]

        def exec_module(module):
            run(module)
            _count(getattr(module, cls_name), stage, self.log)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("MODEL_LOADS_LOG"):
    sys.meta_path.insert(0, _Finder(os.environ["MODEL_LOADS_LOG"]))
