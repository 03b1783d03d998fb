"""Manual screening: the static review pages, the decisions file they produce, and the verdicts it gives."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest

from filtering.review import ReviewFormatError, apply_review, make_review, read_decisions, review_counts

NODE = shutil.which("node")
EVIL = "<script>alert(1)</script> \"double\" 'single' & ü 東京"


class Page(HTMLParser):
    """What a browser would see: cards with their key, video, image and text; links; script bodies."""

    def __init__(self, text: str):
        super().__init__()
        self.cards, self.links, self.scripts, self._in = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "card" in a.get("class", ""):
            self.cards.append({"key": a["data-key"], "text": ""})
        elif tag == "video":
            self.cards[-1]["video"] = a["src"]
            self.cards[-1]["video_attrs"] = set(a)
        elif tag == "img" and self.cards:
            self.cards[-1]["image"] = a["src"]
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts.append("")
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self.cards:
            self.cards[-1]["text"] += data


def synth_table(root: Path, rows: list[dict]) -> pa.Table:
    """A synthesis manifest; rows with `make` get real (plain-bytes) video and image files under `root`."""
    for row in rows:
        for name in ("video_path", "image_path"):
            if row.get(name) and row.get("make", True):
                path = root / row[name]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"not really a video")
    cols = ("prompt_id", "caption", "category", "image_path", "video_path", "status", "reason", "error")
    return pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})


def row(key: str, status: str = "ok", category: str = "weather", **kw) -> dict:
    return {"prompt_id": key, "caption": f"event {key}", "category": category, "image_path": f"images/{key}.jpg",
            "video_path": f"videos/ab/{key}.mp4", "status": status,
            "reason": None if status == "ok" else "generation_error",
            "error": None if status == "ok" else "it broke", **kw}


def pages_of(index: Path) -> dict[str, Page]:
    return {p.name: Page(p.read_text(encoding="utf-8")) for p in sorted(index.parent.glob("*.html"))}


# ---------------------------------------------------------------------------------------------------------- pages


def test_every_ok_video_on_exactly_one_page_and_the_index_links_them_all(tmp_path):
    rows = [row(f"v{i}") for i in range(5)] + [row("bad", "failed"), row("novideo", video_path=None)]
    table = synth_table(tmp_path / "synth", rows)
    out = tmp_path / "review"
    make_review(table, tmp_path / "synth", out, page_size=1)  # an earlier run with more pages
    index = make_review(table, tmp_path / "synth", out, page_size=2)
    pages = pages_of(index)
    assert sorted(pages) == ["index.html", "page-0001.html", "page-0002.html", "page-0003.html"]
    assert [len(pages[f"page-000{n}.html"].cards) for n in (1, 2, 3)] == [2, 2, 1]
    assert [link for link in pages["index.html"].links if link.startswith("page-")] == [
        "page-0001.html", "page-0002.html", "page-0003.html"]
    assert "page-0002.html" in pages["page-0001.html"].links and "index.html" in pages["page-0003.html"].links
    keys = [c["key"] for name, p in pages.items() for c in p.cards]
    assert keys == [f"v{i}" for i in range(5)]  # once each, in table order; no failed row, no row without video
    assert "5 videos to screen" in index.read_text()


def test_video_and_image_urls_resolve_from_the_page_folder(tmp_path):
    root = tmp_path / "synth out"
    absolute = tmp_path / "elsewhere" / "abs #1.mp4"
    rows = [row("a", video_path="videos/ab/odd name #%?.mp4"), row("b", video_path=str(absolute), make=False)]
    table = synth_table(root, rows)
    absolute.parent.mkdir()
    absolute.write_bytes(b"elsewhere")
    index = make_review(table, root, tmp_path / "pages" / "deep", page_size=10)
    cards = Page((index.parent / "page-0001.html").read_text()).cards
    for card, video in zip(cards, (root / "videos/ab/odd name #%?.mp4", absolute)):
        assert "://" not in card["video"] and "#" not in card["video"] and "?" not in card["video"]
        assert (index.parent / unquote(card["video"])).resolve() == video.resolve()
        assert {"controls", "loop", "muted", "preload"} <= card["video_attrs"]
    assert (index.parent / unquote(cards[0]["image"])).resolve() == (root / "images/a.jpg").resolve()


def test_text_is_escaped_and_nothing_comes_from_the_network(tmp_path):
    table = synth_table(tmp_path, [row("k1", caption=EVIL, category="sci_fi")])
    index = make_review(table, tmp_path, tmp_path / "review", title="<b>set</b> \"1\"")
    for name, text in ((p.name, p.read_text(encoding="utf-8")) for p in index.parent.glob("*.html")):
        assert "<script>alert" not in text and "<b>set" not in text, name
        assert not re.search(r"https?://|src=\"//|<link", text), name
        assert text.count("<script>") == 1, name
    card = Page((index.parent / "page-0001.html").read_text(encoding="utf-8")).cards[0]
    assert EVIL in card["text"] and "sci_fi" in card["text"]


def test_no_ok_rows_still_writes_an_index(tmp_path):
    index = make_review(synth_table(tmp_path, [row("x", "dropped")]), tmp_path, tmp_path / "review")
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html"]
    assert "0 videos to screen" in index.read_text()


# A stand-in for the few DOM and storage calls the page script makes, so node can drive it with keys: a, b, c
# decided with the keyboard, notes typed (a "y" typed into a note is text, not a decision), the download's CSV printed.
FAKE_DOM = r"""
const store = new Map(), on = {}, cards = [];
let blob = "";
global.localStorage = { get length() { return store.size; }, key: (i) => [...store.keys()][i],
  getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)) };
function el(props = {}) {
  const e = { dataset: {}, classes: new Set(), kids: [], value: "", ...props };
  e.classList = { add: (c) => e.classes.add(c), remove: (c) => e.classes.delete(c),
    contains: (c) => e.classes.has(c), toggle: (c, yes) => (yes ? e.classes.add(c) : e.classes.delete(c)) };
  Object.assign(e, { addEventListener: (t, f) => (e[t] = f), querySelector: (s) => e.kids.find((k) => k.sel === s),
    querySelectorAll: (s) => e.kids.filter((k) => k.sel === s), matches: () => e.sel === "input.note",
    scrollIntoView() {}, play: async () => {}, pause() {}, click() {}, remove() {}, appendChild() {},
    focus() { document.activeElement = e; }, blur() { document.activeElement = null; } });
  return e;
}
for (const key of ["a", "b", "c"])
  cards.push(el({ dataset: { key }, kids: [el({ sel: "video" }), el({ sel: "input.note" })] }));
const progress = el(), button = el();
global.document = { body: el({ dataset: { store: "S", file: "d.csv" } }), activeElement: null,
  querySelectorAll: () => cards, getElementById: (id) => (id === "progress" ? progress : button),
  addEventListener: (t, f) => (on[t] = f), createElement: () => el() };
global.window = { addEventListener() {} };
global.Blob = class { constructor(parts) { blob = parts.join(""); } };
global.URL = { createObjectURL: () => "blob:", revokeObjectURL() {} };
eval(require("fs").readFileSync(process.argv[1], "utf8"));
const press = (key, target = el()) => on.keydown({ key, target, preventDefault() {} });
function write(text) {
  press("e");
  const note = document.activeElement;
  note.value = text;
  note.input({ target: note });
  press("y", note);
  press("Enter", note);
}
press("j"); press("y"); write('too "dark", then\nfrozen'); press("n");
write("blurry, late"); press("x"); press("y");
button.click();
process.stdout.write(JSON.stringify({ classes: cards.map((c) => [...c.classes].sort()), csv: blob }));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_page_script_decides_with_keys_and_downloads_a_csv_that_reads_back(tmp_path):
    index = make_review(synth_table(tmp_path, [row("k")]), tmp_path, tmp_path / "review")
    (tmp_path / "page.js").write_text(Page((index.parent / "page-0001.html").read_text()).scripts[0])
    subprocess.run([NODE, "--check", str(tmp_path / "page.js")], check=True, capture_output=True)
    done = subprocess.run([NODE, "-e", FAKE_DOM, str(tmp_path / "page.js")], check=True, capture_output=True)
    got = json.loads(done.stdout)
    assert got["classes"] == [["d-keep"], ["d-reject"], ["current", "d-keep"]]  # x cleared c, y decided it again
    (tmp_path / "d.csv").write_text(got["csv"], newline="")
    assert read_decisions(tmp_path / "d.csv") == {
        "a": ("keep", None), "b": ("reject", 'too "dark", then\nfrozen'), "c": ("keep", "blurry, late")}


# ------------------------------------------------------------------------------------------------------ decisions


def test_read_csv_decisions(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('\ufeffKey,Decision,note,extra\nv1,KEEP,,x\nv2, reject ,"blurry, then\nfrozen"\n\n'
                    "v1,keep,late note\nv1,keep,\n", encoding="utf-8")
    assert read_decisions(path) == {"v1": ("keep", "late note"), "v2": ("reject", "blurry, then\nfrozen")}
    (tmp_path / "n.csv").write_text("decision,key\nreject,v3\n")
    assert read_decisions(tmp_path / "n.csv") == {"v3": ("reject", None)}


def test_read_jsonl_decisions(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [{"key": "v1", "decision": "Keep"}, {"key": "v2", "decision": "reject", "note": "melts"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n" + json.dumps(
        {"key": "v2", "decision": "REJECT", "note": None}) + "\n")
    assert read_decisions(path) == {"v1": ("keep", None), "v2": ("reject", "melts")}


@pytest.mark.parametrize("name, text, where, words", [
    ("e.csv", "", "line 1", "key,decision"),
    ("h.csv", "id,verdict\nv1,keep\n", "line 1", "key,decision"),
    ("k.csv", 'key,decision\nv1,keep\n"multi\nline",keep\n ,reject\n', "line 5", "empty key"),
    ("b.csv", "key,decision,note\nv1,keep,\nv2,yes,\n", "line 3", "keep, reject"),
    ("c.csv", "key,decision\nv1,keep\nv2,keep\nv1,reject\n", "line 4", "line 2"),
    ("j.jsonl", '{"key": "v1", "decision": "keep"}\n{"key": "v2", "decision": \n', "line 2", "not JSON"),
    ("m.jsonl", '{"key": "v1", "decision": "keep"}\n\n{"key": "v2"}\n', "line 3", '"decision"'),
    ("x.jsonl", '{"key": "", "decision": "keep"}\n', "line 1", "empty key"),
    ("d.jsonl", '{"key": "v1", "decision": "maybe"}\n', "line 1", "keep, reject"),
    ("t.jsonl", '{"key": "v1", "decision": "reject"}\n{"key": "v1", "decision": "keep"}\n', "line 2", "line 1"),
    ("y.jsonl", '{"key": 7, "decision": "keep"}\n', "line 1", "strings"),
])
def test_bad_decision_files_name_the_file_and_line(tmp_path, name, text, where, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(ReviewFormatError) as err:
        read_decisions(tmp_path / name)
    assert f"{name}: {where}" in str(err.value) and words in str(err.value)


def test_unknown_extension_is_refused(tmp_path):
    (tmp_path / "d.txt").write_text("key,decision\n")
    with pytest.raises(ReviewFormatError, match=r"d\.txt.*\.csv.*\.jsonl"):
        read_decisions(tmp_path / "d.txt")


# -------------------------------------------------------------------------------------------------------- verdicts


def verdict_table(tmp_path) -> pa.Table:
    return synth_table(tmp_path, [
        row("keep1", category="urban_daily_life"), row("rej1", category="urban_daily_life"),
        row("rej2", category="fantasy"), row("open", category="fantasy"),
        row("broke", "failed", category="sci_fi"), row("keepbroke", "failed", category="weather"),
    ])


DECIDED = {"keep1": ("keep", None), "rej1": ("reject", "flickers"), "rej2": ("reject", None),
           "broke": ("reject", None), "keepbroke": ("keep", "nice")}


def test_apply_review_drops_rejected_and_unreviewed_and_keeps_earlier_verdicts(tmp_path):
    table = verdict_table(tmp_path)
    out = apply_review(table, DECIDED, source="d.csv")
    assert out.num_rows == table.num_rows and out["prompt_id"].to_pylist() == table["prompt_id"].to_pylist()
    got = {r["prompt_id"]: r for r in out.to_pylist()}
    assert [got[k]["status"] for k in got] == ["ok", "dropped", "dropped", "dropped", "failed", "failed"]
    assert got["rej1"]["reason"] == "rejected_in_review" and got["rej1"]["error"] == (
        "rejected in manual screening: flickers")
    assert got["rej2"]["error"] == "rejected in manual screening"
    assert got["open"]["reason"] == "not_reviewed" and "unreviewed='keep'" in got["open"]["error"]
    assert "review pages" in got["open"]["error"]
    assert (got["broke"]["reason"], got["broke"]["error"], got["broke"]["review"]) == (
        "generation_error", "it broke", "reject")
    assert out["review"].to_pylist() == ["keep", "reject", "reject", None, "reject", "keep"]
    assert out["review_note"].to_pylist() == [None, "flickers", None, None, None, "nice"]


def test_unreviewed_keep_and_error(tmp_path):
    table = verdict_table(tmp_path)
    kept = apply_review(table, DECIDED, unreviewed="keep")
    assert kept["status"].to_pylist()[3] == "ok" and kept["review"].to_pylist()[3] is None
    with pytest.raises(ReviewFormatError, match=r"1 ok row\(s\) have no decision: 'open'"):
        apply_review(table, DECIDED, unreviewed="error")
    many = synth_table(tmp_path, [row(f"r{i:02d}") for i in range(13)])
    with pytest.raises(ReviewFormatError, match=r"13 ok row.*'r09' and 3 more"):
        apply_review(many, {}, unreviewed="error")
    with pytest.raises(ValueError, match="drop, keep, error"):
        apply_review(table, DECIDED, unreviewed="skip")


def test_keys_from_another_set_are_refused(tmp_path):
    table = verdict_table(tmp_path)
    others = {f"z{i:02d}": ("keep", None) for i in range(12)}
    with pytest.raises(ReviewFormatError, match=r"d\.csv: 12 key\(s\) are not in this table: 'z00'.*and 2 more"):
        apply_review(table, DECIDED | others, source="d.csv")
    with pytest.raises(ReviewFormatError, match="'maybe'"):
        apply_review(table, {"keep1": ("maybe", None)})


def test_second_review_replaces_the_columns(tmp_path):
    first = apply_review(verdict_table(tmp_path), DECIDED)
    again = apply_review(first, {"keep1": ("reject", None)}, unreviewed="keep")
    assert again.column_names == first.column_names
    assert again["status"].to_pylist()[0] == "dropped" and again["review"].to_pylist()[:2] == ["reject", None]


def test_review_counts_overall_and_per_category(tmp_path):
    counts = review_counts(apply_review(verdict_table(tmp_path), DECIDED))
    assert {k: counts[k] for k in ("rows", "kept", "rejected", "not_reviewed", "earlier", "ok", "keep_rate")} == {
        "rows": 6, "kept": 1, "rejected": 2, "not_reviewed": 1, "earlier": 2, "ok": 1, "keep_rate": 0.3333}
    by = counts["by_category"]
    assert sorted(by) == ["fantasy", "sci_fi", "urban_daily_life", "weather"]
    assert (by["urban_daily_life"]["kept"], by["urban_daily_life"]["rejected"], by["urban_daily_life"]["keep_rate"]) \
        == (1, 1, 0.5)
    assert (by["fantasy"]["rejected"], by["fantasy"]["not_reviewed"], by["sci_fi"]["earlier"]) == (1, 1, 1)
    assert by["weather"] == {"rows": 1, "kept": 0, "rejected": 0, "not_reviewed": 0, "earlier": 1, "ok": 0,
                             "keep_rate": None}
    plain = review_counts(apply_review(verdict_table(tmp_path).drop_columns(["category"]), DECIDED, "keep"))
    assert "by_category" not in plain and plain["not_reviewed"] == 1 and plain["ok"] == 2
