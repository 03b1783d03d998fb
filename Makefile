# Two commands, both fine on a fresh CPU machine:  make demo  |  make test
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	touch $@

.PHONY: setup demo test test-slow bench
setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/yume-data demo

# everything but the end-to-end runs of whole flows (a few minutes); `make test-slow` runs those (CI runs both)
test: setup
	$(PY) -m pytest -m "not slow"

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) benchmarks/bench_quantize.py
	$(PY) benchmarks/bench_shards.py
	$(PY) benchmarks/bench_flow.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_frames.py
	$(PY) benchmarks/bench_caption_client.py
	$(PY) benchmarks/bench_dedup.py
	$(PY) benchmarks/bench_wan_step.py --small
	$(PY) benchmarks/bench_tscm.py --train-steps 5
	test -d yume-data-demo/real-world/shards || $(VENV)/bin/yume-data demo
	$(PY) benchmarks/bench_loader.py
