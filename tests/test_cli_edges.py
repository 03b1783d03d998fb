"""Clean edges of every command: a UTF-8 BOM is accepted by every file reader; a malformed input file or setting
ends the command with one line naming the file, the problem and the fix, exit status 2 and no traceback (`--debug`
shows it); an unwritable output folder or a full disk is reported as such, naming the folder."""

import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from captioning.prompts import load_prompt
from filtering.review import read_decisions
from pipelines.cli import main
from synthesis.events import read_event_set
from synthesis.inputs import read_prompts
from synthesis.select_csv import read_openvid_csv
from synthesis.select_sample import OPENVID_HEADER
from yume_core.config import load_yaml
from yume_core.errors import InputError
from yume_core.manifest import write_manifest
from yume_core.sekai import read_sekai_csv

BOM = "\ufeff"
EVENT = "event_id,category,description,image\ne1,weather,rain sweeps across the square,street.png\n"
OPENVID = ",".join(OPENVID_HEADER) + "\nclip_1.mp4,a tram crosses a bridge,5,1,1,static,100,30,3\n"


@pytest.fixture
def files(tmp_path):
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / "street.png")
    return tmp_path


def _bom(path: Path, text: str) -> str:
    path.write_text(BOM + text, encoding="utf-8")
    return str(path)


Reader = namedtuple("Reader", "name text read check")
READERS = [
    Reader("openvid.csv", OPENVID, lambda p: read_openvid_csv(p).table, lambda t: t["caption"][0].as_py()),
    Reader("events.csv", EVENT, read_event_set, lambda t: t["status"][0].as_py() == "ok" and t["prompt_id"][0].as_py()),
    Reader("events.jsonl", '{"event_id": "e1", "category": "weather", "description": "rain", "image": "street.png"}\n',
           read_event_set, lambda t: t["status"][0].as_py() == "ok" and t["prompt_id"][0].as_py()),
    Reader("prompts.txt", "a tram crosses a bridge\n", read_prompts, lambda t: t["caption"][0].as_py()),
    Reader("prompts.csv", "caption\na tram crosses a bridge\n", read_prompts, lambda t: t["caption"][0].as_py()),
    Reader("decisions.csv", "key,decision,note\nv1,keep,\n", read_decisions, lambda d: d["v1"][0]),
    Reader("config.yaml", "batch_size: 4\n", load_yaml, lambda d: d["batch_size"]),
    Reader("prompt.yaml", (Path(__file__).parents[1] / "captioning" / "prompts" / "event_v1.yaml").read_text(),
           load_prompt, lambda p: p.version),
]


@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_every_reader_takes_a_utf8_bom(files, reader):
    assert reader.check(reader.read(_bom(files / reader.name, reader.text)))
    # the same file without the mark reads the same
    plain = files / f"plain-{reader.name}"
    plain.write_text(reader.text, encoding="utf-8")
    assert reader.check(reader.read(str(plain))) == reader.check(reader.read(str(files / reader.name)))


def test_a_sekai_csv_with_a_bom_reads_and_paths_leaving_the_folders_fail_their_rows(files):
    (files / "videos").mkdir()
    header = "videoFile,cameraFile,caption,location,scene,crowdDensity,weather,timeOfDay\n"
    rows = "abc_0_60.mp4,,a street,x,y,low,sunny,day\n../../etc/passwd.mp4,,a street,x,y,low,sunny,day\n"
    table = read_sekai_csv(_bom(files / "sekai.csv", header + rows), files / "videos", files / "cameras")
    assert table["clip_id"].to_pylist()[0] == "abc_0_60" and "videoFile" not in table.column_names
    assert table["reason"].to_pylist() == [None, "path_outside_root"]


def _clip_manifest(folder: Path) -> str:
    return str(write_manifest(pa.table({"prompt_id": ["a"], "caption": ["x"], "status": ["ok"]}),
                              folder / "videos.parquet"))


# (what, file to name, args) for one malformed input of each kind; {d} is the test's folder
CASES = {
    "OpenVid CSV header": ("openvid.csv", "name,text\nx,y\n",
                           ["select-prompts", "--csv", "{f}", "--output", "{d}/p.parquet"], "'caption' column"),
    "prompts file header": ("prompts.csv", "foo,bar\n1,2\n",
                            ["synthesize", "--prompts", "{f}", "--output", "{d}/s", "--preset", "tiny"], "'caption'"),
    "empty prompts file": ("prompts.txt", "\n",
                           ["synthesize", "--prompts", "{f}", "--output", "{d}/s", "--preset", "tiny"], "no prompts"),
    "event set header": ("events.csv", "event_id,description\ne1,rain\n",
                         ["synthesize", "--prompts", "{f}", "--output", "{d}/s", "--preset", "tiny"], "lacks"),
    "decisions file": ("decisions.csv", "id,verdict\na,keep\n",
                       ["review", "apply", "--manifest", "{m}", "--decisions", "{f}", "--output", "{d}/r"],
                       "key,decision"),
    "config YAML": ("config.yaml", "batch_size: [1,\n",
                    ["filter", "--manifest", "{m}", "--output", "{d}/o", "--preset", "tiny", "--config", "{f}"],
                    "cannot read config"),
    "config key": ("config.yaml", "synth: {stpes: 3}\n",
                   ["synthesize", "--prompts", "{m}", "--output", "{d}/s", "--preset", "tiny", "--config", "{f}"],
                   "unknown setting(s) synth.stpes"),
    "prompt file": ("prompt.yaml", "version: x\n",
                    ["caption", "--manifest", "{m}", "--output", "{d}/c", "--prompt", "{f}"], "'system'"),
    "clip manifest": ("videos.parquet", None, ["caption", "--manifest", "{f}", "--output", "{d}/c"], "clip_id"),
    "Sekai CSV header": ("sekai.csv", "name,text\nx,y\n",
                         ["event-images", "--csv", "{f}", "--videos", "{d}", "--output", "{d}/e"], "videoFile"),
    "vocabulary file": ("vocabulary.yaml", "prefix: 1\n",
                        ["embed-actions", "--output", "{d}/a.safetensors", "--vocabulary", "{f}"], "'version'"),
}


def _invoke(args: list[str], folder: Path, name: str, text: str | None, *extra: str):
    f = folder / name
    if text is None:
        _clip_manifest(folder)
    else:
        f.write_text(text)
    manifest = _clip_manifest(folder)
    filled = [a.format(f=f, d=folder, m=manifest) for a in args]
    return CliRunner().invoke(main, [*extra, *filled]), f


@pytest.mark.parametrize("kind", list(CASES))
def test_a_malformed_input_is_one_line_naming_the_file_with_exit_2(files, kind):
    name, text, args, problem = CASES[kind]
    result, f = _invoke(args, files, name, text)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert str(f) in lines[0] and problem in lines[0]


def test_debug_shows_the_traceback(files):
    name, text, args, _ = CASES["decisions file"]
    result, _ = _invoke(args, files, name, text, "--debug")
    assert result.exit_code == 1 and isinstance(result.exception, InputError)


def test_an_output_folder_that_cannot_be_made_is_named(files):
    blocker = files / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["review", "make", "--manifest", _clip_manifest(files), "--output",
                                       str(blocker / "pages")])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {blocker / 'pages'}: cannot be used as the output folder")


def test_a_full_disk_is_reported_as_such_naming_the_folder(files, monkeypatch):
    usage = shutil.disk_usage(files)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    name, text, args, _ = CASES["OpenVid CSV header"]
    (files / name).write_text(OPENVID)
    result = CliRunner().invoke(main, [a.format(f=files / name, d=files) for a in args])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {files}: output folder disk full (4096 bytes free, 1048576 needed to "
                                     "start); free space there or write to another disk")
