"""Stream files: the shipped CoIN and D-MoLE streams pass on a tiny fixture in their layout,
and each kind of broken data is reported with its task, file and record (CLI exit 2)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dmole_lab.cli import main
from dmole_lab.data.stream_file import (
    StreamFileError,
    check_stream,
    load_stream_file,
)

STREAMS = Path(__file__).resolve().parents[1] / "configs" / "streams"
COIN = STREAMS / "coin.yaml"
DMOLE = STREAMS / "dmole.yaml"
# data_root (conftest): a few records per task in the layout of both shipped stream files


@pytest.mark.parametrize("path,n", [(COIN, 8), (DMOLE, 9)])
def test_shipped_streams_pass(data_root, path, n, capsys):
    sf = load_stream_file(path)
    assert len(sf.tasks) == n and set(sf.general) == {"pope", "mme", "mmmu"}
    report = check_stream(sf, images="verify")
    assert report.ok, report.summary()
    assert set(sf.task_names) <= set(report.counts)
    assert all(report.counts[t]["train"]["samples"] == 2 for t in sf.task_names)
    assert main(["check-data", "--stream-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in sf.task_names) and "0 error(s)" in out


def test_shipped_orders_and_scorers(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data")
    coin = {t.name: t.scorer for t in load_stream_file(COIN).tasks}
    assert coin == {"ScienceQA": "option", "TextVQA": "textvqa", "ImageNet": "substring",
                    "GQA": "gqa", "VizWiz": "exact", "Grounding": "grounding",
                    "VQAv2": "exact", "OCR-VQA": "ocr"}
    dmole = load_stream_file(DMOLE)
    assert dmole.task_names == ["VizWiz-Caption", "SK-VG", "TextCaps", "IconQA", "OCR-VQA",
                                "Flickr30k", "VizWiz", "KVQA", "PMC-VQA"]
    assert dmole.tasks[0].train == Path("/data/dmole_data/vizwiz_caption/train.jsonl")


def _break_image(root):
    next((root / "dmole_data" / "vizwiz" / "images").rglob("*.png")).unlink()
    return "VizWiz", "image not found"


def _break_field(root):
    p = root / "playground" / "Instructions_Original" / "GQA" / "train.json"
    recs = json.loads(p.read_text())
    recs[1]["conversations"][1]["from"] = "bot"
    p.write_text(json.dumps(recs))
    return "GQA", "record 1 (id 'GQA_1'): field 'conversations[1].from'"


def _break_duplicate(root):
    p = root / "dmole_data" / "kvqa" / "test.jsonl"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + lines[:1]) + "\n")
    return "KVQA", "duplicate id"


def _break_empty(root):
    (root / "playground" / "Instructions_Original" / "OCR-VQA" / "test.json").write_text("[]")
    return "OCR-VQA", "no usable samples"


@pytest.mark.parametrize("breaker", [_break_image, _break_field, _break_duplicate,
                                     _break_empty])
def test_broken_data_is_reported(data_root, breaker, capsys):
    task, fragment = breaker(data_root)
    path = COIN if task in ("GQA", "OCR-VQA") else DMOLE
    report = check_stream(path)
    assert not report.ok
    hits = [str(p) for p in report.errors if fragment in str(p)]
    assert hits and all(f"[{task} " in h for h in hits), report.summary()
    assert main(["check-data", "--stream-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.out and "dmole-lab check-data: error:" in captured.err


def test_unknown_scorer_and_structure_errors(data_root, tmp_path, capsys):
    text = COIN.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("scorer: gqa", "scorer: magic"))
    with pytest.raises(StreamFileError, match="unknown scorer 'magic'; allowed: option"):
        load_stream_file(bad)
    assert main(["check-data", "--stream-file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "task 'GQA': unknown scorer 'magic'" in err
    sf = load_stream_file(COIN)
    sf = replace(sf, tasks=[replace(sf.tasks[0], scorer="magic"), *sf.tasks[1:]])
    assert any("unknown scorer 'magic'" in str(p) and "[ScienceQA config]" in str(p)
               for p in check_stream(sf).errors)
    for old, new, msg in [("scorer: gqa", "scorer: gqa\n  colour: red", "unknown key 'colour'"),
                          ("- name: GQA", "- name: VizWiz", "duplicate task or set name 'VizWiz'"),
                          ("  scorer: gqa\n", "", "missing field 'scorer'")]:
        bad.write_text(text.replace(old, new))
        with pytest.raises(StreamFileError, match=msg):
            load_stream_file(bad)
    # relative paths are taken from the YAML's folder
    rel = tmp_path / "rel.yaml"
    rel.write_text("tasks:\n- {name: a, train: t.json, test: q.json, image_root: img, "
                   "scorer: exact}\n")
    assert load_stream_file(rel).tasks[0].train == tmp_path.resolve() / "t.json"
