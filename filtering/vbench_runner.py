"""Runs VBench on a folder of videos; executed by the python of VBench's own environment, not the project's.

`filtering.vbench_backend` starts it as `python vbench_runner.py --videos DIR --out DIR --name NAME --dimensions ...`.
VBench pins numpy<2 and transformers==4.33.2, so this project is not installed next to it: this file imports only
the standard library, torch and vbench. It writes VBench's own `{out}/{name}_eval_results.json` and exits non-zero,
with the traceback and a one-line reason on stderr, when VBench cannot run.
"""

import argparse
import os
import sys
import traceback
from typing import NoReturn


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, help="folder of .mp4 files; VBench reads every one")
    parser.add_argument("--out", required=True, help="VBench's output_path")
    parser.add_argument("--name", required=True, help="results land in {out}/{name}_eval_results.json")
    parser.add_argument("--dimensions", nargs="+", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--local", action="store_true",
                        help="load CLIP and DINO from VBENCH_CACHE_DIR instead of fetching them (air-gapped nodes)")
    return parser.parse_args(argv)


def fail(message: str, code: int) -> NoReturn:
    """The traceback (when there is one) and then the reason, so the last lines of stderr say what went wrong."""
    if sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"vbench_runner: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import torch
        import vbench
    except Exception as exc:
        fail(f"cannot import vbench in {sys.executable}: {exc}", 3)
    # Shipped inside the package (vbench/VBench_full_info.json); custom_input mode does not read it, but the
    # constructor takes it, as VBench's own launcher passes it.
    full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
    try:
        # A torch.device, as VBench's launcher passes: motion_smoothness tests `device == 'cuda'`, never true for a
        # torch.device, so frames are not downscaled by free VRAM, as in VBench's own runs. No dist_init(): one
        # process needs no process group, and concurrent runners would clash on its fixed port.
        bench = vbench.VBench(torch.device(args.device), full_info, args.out)
        bench.evaluate(videos_path=args.videos, name=args.name, dimension_list=args.dimensions,
                       local=args.local, mode="custom_input")
    except Exception as exc:
        fail(f"VBench failed ({', '.join(args.dimensions)}): {type(exc).__name__}: {exc}", 1)
    results = os.path.join(args.out, f"{args.name}_eval_results.json")
    if not os.path.isfile(results):
        fail(f"VBench finished without writing {results}", 2)


if __name__ == "__main__":
    main()
