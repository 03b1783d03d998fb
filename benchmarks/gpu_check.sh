#!/usr/bin/env bash
# The project's GPU figures in one command, under 8 minutes on one H100 or H200; one JSON of results.
# What it measures and how it stays within its time: benchmarks/gpu_check.py (its docstring).
#
#   bash benchmarks/gpu_check.sh                                  # GPU machine: every section, $OUT/gpu_check.json
#   bash benchmarks/gpu_check.sh --out r.json --sections wan,nvdec --budget 300
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json   # any CPU machine, tiny configs, seconds
#
# The GPU machine needs Python 3 with CUDA PyTorch and transformers, and nothing from the network: what else the run
# imports comes as wheels in .whl/ at the repository root (git ignores it; ~48 MB, under a 64 MiB upload together
# with the repository). Fetch them beforehand on a machine with network, for the GPU machine's Python version:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       diffusers==0.42.1 av==18.1.0 pillow==13.0.0 webdataset==1.0.2 braceexpand==0.1.7 \
#       requests==2.34.2 urllib3==2.8.0 certifi==2026.10.19.post1 charset-normalizer==3.5.3
#
# av (35.8 MB: FFmpeg with NVDEC and CUDA, an abi3 wheel for any CPython >= 3.11), diffusers (6.4 MB) and pillow
# (7.1 MB, one wheel per Python version) are the bulk; requests and its three dependencies are there because
# diffusers checks for them when imported. Where .whl/ holds wheels, this script installs them into /tmp/site and
# puts that first on PYTHONPATH (a --dry-run uses the current environment as it is). A wheel that does not fit the
# machine's Python is reported and skipped; the sections that need it then record the import error.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done

if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl; then
    for wheel in .whl/*.whl; do
      "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$wheel" \
        || echo "skipped $wheel: it does not install with $("$PY" --version 2>&1)"
    done
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

exec "$PY" benchmarks/gpu_check.py "$@"
