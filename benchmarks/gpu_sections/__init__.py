"""The sections of `benchmarks/gpu_check.py`, one module each (`section_<name>(part, until, dry)`), and `common`: the
device probes, the results file and the helpers they share. Each runs in a process of its own, started by the
driver, and imports only what it measures."""
