"""A fake `vbench` 0.1.5 for the tests: the API surface `filtering/vbench_runner.py` uses, with made-up scores.

Like the real package: `VBench(device, full_info_dir, output_path)` makes `output_path`; `evaluate(videos_path, name,
prompt_list=[], dimension_list=None, local=False, read_frame=False, mode=..., **kwargs)` in `custom_input` mode reads
every .mp4/.gif/.jpg/.png in the folder (prompt = file name without `-<n>` and suffix), writes
`{output_path}/{name}_full_info.json` and `{output_path}/{name}_eval_results.json` shaped
`{dimension: [mean, [{"video_path": ..., "video_results": ...}, ...]]}`; dynamic_degree gives a bool per video and
imaging_quality MUSIQ's 0-100 score per video (only the mean is divided by 100). `VBench_full_info.json` sits next to
this file, as in the installed package.

Scores are deterministic in the file size: `size / 1000` for every float dimension (imaging_quality: `size / 10`
per video), `size % 2 == 1` for dynamic_degree. FAKE_VBENCH_FAIL picks a failure: `crash` (an exception deep in a
dimension), `hang` (sleeps), `omit` (the largest video is left out of the first dimension's results, as VBench skips
videos it reads no frames from), `nowrite` (returns without writing results), `badjson` (writes a truncated
results file). FAKE_VBENCH_RECORD names a JSON file
that receives the call's arguments, so tests see what the runner passed.
"""

import json
import os
import re
import time
from pathlib import Path

import torch

SUFFIXES = (".mp4", ".gif", ".jpg", ".png")


def get_prompt_from_filename(path):
    return re.sub(r"-\d+$", "", Path(path).stem)


class VBench:
    def __init__(self, device, full_info_dir, output_path):
        if not isinstance(device, torch.device):
            raise TypeError(f"fake VBench wants a torch.device, as VBench's launcher passes; got {device!r}")
        if not os.path.isfile(full_info_dir):
            raise FileNotFoundError(full_info_dir)
        self.device = device
        self.full_info_dir = full_info_dir
        self.output_path = output_path
        os.makedirs(self.output_path, exist_ok=True)

    def evaluate(self, videos_path, name, prompt_list=[], dimension_list=None, local=False, read_frame=False,
                 mode="vbench_standard", **kwargs):
        if mode != "custom_input":
            raise NotImplementedError(f"the fake VBench only knows custom_input, got {mode!r}")
        failure = os.environ.get("FAKE_VBENCH_FAIL", "")
        videos = sorted(os.path.join(videos_path, f) for f in os.listdir(videos_path) if f.lower().endswith(SUFFIXES))
        info = [{"prompt_en": get_prompt_from_filename(v), "dimension": dimension_list, "video_list": [v]}
                for v in videos]
        _save(info, os.path.join(self.output_path, f"{name}_full_info.json"))
        _record(self, videos_path, name, dimension_list, local, read_frame, mode, info)
        if failure == "hang":
            time.sleep(60)
        results = {dim: _dimension(dim, videos, failure) for dim in dimension_list}
        if failure == "omit":
            dim = dimension_list[0]
            largest = max(videos, key=os.path.getsize)
            results[dim][1] = [r for r in results[dim][1] if r["video_path"] != largest]
        output_name = os.path.join(self.output_path, f"{name}_eval_results.json")
        if failure == "badjson":
            Path(output_name).write_text(json.dumps(results)[:-10], encoding="utf-8")
        elif failure != "nowrite":
            _save(results, output_name)
            print(f"Evaluation results saved to {output_name}")


def _dimension(dim, videos, failure):
    per_video = [{"video_path": v, "video_results": _score(dim, os.path.getsize(v), failure)} for v in videos]
    values = [float(r["video_results"]) for r in per_video]
    mean = sum(values) / len(values) / (100.0 if dim == "imaging_quality" else 1.0)
    return [mean, per_video]


def _score(dim, size, failure):
    if failure == "crash":
        raise RuntimeError("CUDA out of memory (fake VBench crash)")
    if dim == "dynamic_degree":
        return size % 2 == 1
    return size / 10 if dim == "imaging_quality" else size / 1000


def _record(bench, videos_path, name, dimension_list, local, read_frame, mode, info):
    path = os.environ.get("FAKE_VBENCH_RECORD")
    if path:
        _save({"device": bench.device.type, "full_info_dir": bench.full_info_dir, "videos_path": videos_path,
               "name": name, "dimension_list": dimension_list, "local": local, "read_frame": read_frame,
               "mode": mode, "prompts": [i["prompt_en"] for i in info],
               "cache_dir": os.environ.get("VBENCH_CACHE_DIR")}, path)


def _save(data, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4)
