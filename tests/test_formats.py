"""Real-data formats: LLaVA conversations, CoIN question/answer files, POPE, MME, MMMU-style
files and D-MoLE's meta JSON, read lazily through ``datasets`` and written back."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from dmole_lab.data.formats import (
    DataFormatError,
    LazySample,
    chat_messages,
    check_coin,
    check_llava,
    check_meta,
    check_mme,
    check_mmmu,
    check_pope,
    read_coin,
    read_llava,
    read_meta,
    read_meta_tasks,
    read_mme,
    read_mmmu,
    read_pope,
    write_coin,
    write_llava,
    write_meta_tasks,
    write_mme,
    write_mmmu,
    write_pope,
)
from dmole_lab.data.tasks import Sample, make_samples


def png(path, seed: int, size=(20, 14)) -> np.ndarray:
    """A random RGB image written as PNG at ``path``; returns its pixels."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(arr).save(path)
    return arr


def jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub access: ``datasets`` works on local files only."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


@pytest.fixture()
def cache(tmp_path):
    """Readers' Arrow cache inside the test's folder."""
    return {"cache_dir": tmp_path / "hf-cache"}


def turn(who, value):
    return {"from": who, "value": value}


# ------------------------------------------------------------------------------ LLaVA


def test_llava_json_reads_prompt_answer_and_pixels(tmp_path, cache):
    a = png(tmp_path / "img" / "a.png", 0)
    b = png(tmp_path / "img" / "b.png", 1, (9, 31))
    records = [
        {"id": "r1", "image": "img/a.png",
         "conversations": [turn("human", "<image>\nWhat is shown?"), turn("gpt", "A cat.")]},
        {"id": 7, "image": "img/b.png",
         "conversations": [turn("human", "Read the sign.\n<image>"), turn("gpt", "STOP")]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    view = read_llava(tmp_path / "train.json", **cache)
    assert len(view) == 2 and view.report.ok
    s0, s1 = view[0], view[1]
    assert isinstance(s0, Sample) and isinstance(s0, LazySample)
    assert (s0.task, s0.question, s0.answer) == ("train", "What is shown?", "A cat.")
    assert (s1.question, s1.answer, s1.meta["id"]) == ("Read the sign.", "STOP", "7")
    np.testing.assert_array_equal(s0.image, a)
    np.testing.assert_array_equal(s1.image, b)
    assert s1.image.shape == (31, 9, 3) and s1.image.dtype == np.uint8
    assert [s.answer for s in view] == ["A cat.", "STOP"]
    assert [s.answer for s in view[::-1]] == ["STOP", "A cat."]


def test_llava_jsonl_image_lists_and_text_only(tmp_path, cache):
    a = png(tmp_path / "a.png", 2)
    b = png(tmp_path / "b.png", 3)
    jsonl(tmp_path / "mix.jsonl", [
        {"id": "two", "image": ["a.png", "b.png"],
         "conversations": [turn("human", "<image>\n<image>\nSame?"), turn("gpt", "No")]},
        {"id": "text", "conversations": [turn("human", "Say hi."), turn("gpt", "hi")]},
    ])
    view = read_llava(tmp_path / "mix.jsonl", task="mix", **cache)
    assert [s.meta["id"] for s in view] == ["two"]  # text-only skipped by default
    assert view.report.counts["skipped_text_only"] == 1
    assert view.report.counts["multi_image"] == 1
    s = view[0]
    assert s.question == "Same?" and s.task == "mix"
    np.testing.assert_array_equal(s.image, a)
    got = s.images()
    assert len(got) == 2
    np.testing.assert_array_equal(got[1], b)

    kept = read_llava(tmp_path / "mix.jsonl", text_only="keep", multi_image="skip", **cache)
    assert [s.meta["id"] for s in kept] == ["text"]
    assert kept[0].image is None and kept[0].image_path is None


def test_llava_multi_turn_trains_every_assistant_turn(tmp_path, cache):
    img = png(tmp_path / "x.png", 4)
    records = [{"id": "conv", "image": "x.png", "conversations": [
        turn("human", "<image>\nWhat colour is the car?"), turn("gpt", "Red."),
        turn("human", "How many wheels?"), turn("gpt", "Four."),
        turn("human", "Is it parked?"), turn("gpt", "Yes."),
    ]}]
    (tmp_path / "mt.json").write_text(json.dumps(records))
    view = read_llava(tmp_path / "mt.json", **cache)
    assert [s.answer for s in view] == ["Red.", "Four.", "Yes."]
    assert view[0].question == "What colour is the car?"
    assert view[1].question == ("USER: What colour is the car?\nASSISTANT: Red.\n"
                                "USER: How many wheels?")
    last = view[2]
    assert (last.meta["turn"], last.meta["n_turns"]) == (2, 3)
    assert last.meta["history"] == [["What colour is the car?", "Red."],
                                    ["How many wheels?", "Four."]]
    np.testing.assert_array_equal(last.image, img)
    msgs = chat_messages(last)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"][0] == {"type": "image"}
    assert all({"type": "image"} not in m["content"] for m in msgs[1:])
    assert msgs[-1]["content"] == [{"type": "text", "text": "Is it parked?"}]

    first = read_llava(tmp_path / "mt.json", multi_turn="first", **cache)
    only_last = read_llava(tmp_path / "mt.json", multi_turn="last", **cache)
    assert [s.answer for s in first] == ["Red."]
    assert [s.answer for s in only_last] == ["Yes."]

    # written back, the three samples are one record again
    write_llava(view, tmp_path / "out" / "mt.json")
    back = json.loads((tmp_path / "out" / "mt.json").read_text())
    assert len(back) == 1
    assert [t["value"] for t in back[0]["conversations"]] == [
        "<image>\nWhat colour is the car?", "Red.", "How many wheels?", "Four.",
        "Is it parked?", "Yes."]


def test_llava_validation_names_file_record_id_and_field(tmp_path, cache):
    png(tmp_path / "ok.png", 5)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "image": "ok.png",
                    "conversations": [turn("human", "<image>\nq"), turn("gpt", "x")]}),
        json.dumps({"id": "b", "image": "ok.png",
                    "conversations": [turn("human", "<image>\nq"), turn("bot", "x")]}),
        json.dumps({"id": "c", "image": "gone/missing.png",
                    "conversations": [turn("human", "<image>\nq"), turn("gpt", "x")]}),
        json.dumps({"id": "a", "image": "ok.png",
                    "conversations": [turn("human", "<image>\nq"), turn("gpt", "y")]}),
        "{not json",
        json.dumps({"id": "e", "image": "ok.png", "conversations": [turn("human", 3)]}),
    ]) + "\n")
    report = check_llava(path)
    msgs = [str(p) for p in report.errors]
    assert len(msgs) == 5, report.summary()
    assert msgs[0] == (f"error: {path}: record 1 (line 2, id 'b'): field "
                       "'conversations[1].from': expected 'human' or 'gpt', got 'bot'")
    missing = tmp_path / "gone" / "missing.png"
    assert msgs[1] == (f"error: {path}: record 2 (line 3, id 'c'): field 'image': "
                       f"image not found: {missing}")
    assert msgs[2] == (f"error: {path}: record 3 (line 4, id 'a'): field 'id': "
                       "duplicate id 'a' (first at record 0)")
    assert msgs[3].startswith(f"error: {path}: record 4 (line 5): not valid JSON")
    assert "record 5 (line 6, id 'e'): field 'conversations[0].value'" in msgs[4]
    c = report.counts
    assert (c["records"], c["samples"], c["missing_images"], c["duplicate_ids"]) == (6, 1, 1, 1)

    with pytest.raises(DataFormatError) as err:
        read_llava(path, **cache)
    assert "5 error(s)" in str(err.value) and msgs[1] in str(err.value)
    assert err.value.report.counts["errors"] == 5
    lenient = read_llava(path, strict=False, **cache)
    assert [s.meta["id"] for s in lenient] == ["a"]
    assert len(lenient.report.errors) == 5


def test_rereading_an_edited_file_gives_its_new_content(tmp_path, cache):
    png(tmp_path / "i.png", 7)
    rec = lambda a: [{"id": "x", "image": "i.png",  # noqa: E731
                      "conversations": [turn("human", "<image>\nq"), turn("gpt", a)]}]
    (tmp_path / "d.json").write_text(json.dumps(rec("aa")))
    assert read_llava(tmp_path / "d.json", **cache)[0].answer == "aa"
    (tmp_path / "d.json").write_text(json.dumps(rec("bb")))  # same size, new content
    assert read_llava(tmp_path / "d.json", **cache)[0].answer == "bb"
    (tmp_path / "i.png").unlink()
    view = read_llava(tmp_path / "d.json", strict=False, **cache)
    assert len(view) == 0 and view.report.counts["missing_images"] == 1


def test_llava_placeholder_checks(tmp_path):
    png(tmp_path / "i.png", 6)
    (tmp_path / "p.json").write_text(json.dumps([
        {"id": "noimg", "conversations": [turn("human", "<image>\nq"), turn("gpt", "a")]},
        {"id": "notoken", "image": "i.png",
         "conversations": [turn("human", "q"), turn("gpt", "a")]},
        {"id": "gptfirst", "conversations": [turn("gpt", "a"), turn("human", "q")]},
    ]))
    report = check_llava(tmp_path / "p.json")
    by_id = {p.id: p for p in report.problems}
    assert by_id["noimg"].level == "error" and "has <image>" in by_id["noimg"].message
    assert by_id["notoken"].level == "warning"
    assert by_id["gptfirst"].field == "conversations[0].from"
    assert report.counts["samples"] == 1


def test_write_llava_exports_synthetic_samples(tmp_path, cache):
    samples = make_samples("ocr", 3, "train", seed=0)
    write_llava(samples, tmp_path / "ocr.jsonl")
    rec = json.loads((tmp_path / "ocr.jsonl").read_text().splitlines()[0])
    assert rec["image"] == "images/ocr_0.png"
    assert rec["conversations"][0]["value"] == "<image>\n" + samples[0].question
    back = read_llava(tmp_path / "ocr.jsonl", **cache)
    assert [(s.question, s.answer) for s in back] == [(s.question, s.answer) for s in samples]
    for s, t in zip(samples, back):
        np.testing.assert_array_equal(t.image, s.image)


# ------------------------------------------------------------------------------ laziness


def test_reading_opens_no_image_until_one_is_accessed(tmp_path, monkeypatch, cache):
    pixels = [png(tmp_path / "im" / f"{k}.png", 10 + k) for k in range(3)]
    jsonl(tmp_path / "big.jsonl", [
        {"id": f"s{i}", "image": f"im/{i % 3}.png",
         "conversations": [turn("human", f"<image>\nquestion {i}"), turn("gpt", f"answer {i}")]}
        for i in range(1000)])
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(fp)
                        or real_open(fp, *a, **k))
    view = read_llava(tmp_path / "big.jsonl", **cache)
    assert check_llava(tmp_path / "big.jsonl").counts["samples"] == 1000
    assert len(view) == 1000
    assert sum(s.answer == f"answer {i}" for i, s in enumerate(view)) == 1000
    samples = view[100:200]
    assert opened == []
    np.testing.assert_array_equal(view[5].image, pixels[2])
    assert len(opened) == 1 and str(opened[0]).endswith("im/2.png")
    np.testing.assert_array_equal(samples[1].image, pixels[101 % 3])
    assert len(opened) == 2


def test_encode_consumes_lazy_samples(tmp_path, cache):
    """The toolkit's encoder takes a view as it takes a list of synthetic samples."""
    import torch

    from dmole_lab.data.encode import concat, encode, prompt_batch, subset, train_batch

    class Tok:
        eos_token_id, pad_token_id = 1, 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[2 + ord(c) % 200 for c in t] for t in texts]}

    class Proc:
        tokenizer = Tok()

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return "U: " + messages[0]["content"][1]["text"]

        def __call__(self, text, images, return_tensors, padding, add_special_tokens):
            ids = self.tokenizer(text)["input_ids"]
            width = max(map(len, ids))
            input_ids = torch.zeros(len(ids), width, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for r, row in enumerate(ids):
                input_ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            images = [im[0] if isinstance(im, list) else im for im in images]  # one per sample
            pix = torch.stack([torch.from_numpy(np.array(im.resize((4, 4)))) for im in images])
            return {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pix}

    arrays = [png(tmp_path / f"{k}.png", 20 + k, (10 + k, 7)) for k in range(3)]
    write_llava([Sample("t", a, f"q{k}", f"a{k}") for k, a in enumerate(arrays)],
                tmp_path / "t.json", image_subdir="pix")
    view = read_llava(tmp_path / "t.json", **cache)
    enc = encode(Proc(), view, chunk=2)
    # lazy: nothing processed up front; each batch decodes its images and keeps its prompt ids
    assert enc.lazy and enc.image_inputs == {} and enc.samples is view
    assert enc.prompt_ids.known == {}
    want = np.asarray(PIL.Image.fromarray(arrays[2]).resize((4, 4)))
    np.testing.assert_array_equal(enc.images([2])["pixel_values"][0].numpy(), want)
    assert set(enc.prompt_ids.known) == {2}  # learnt from that batch
    assert len(enc) == 3 and enc.prompt_ids[1].tolist() == Tok()(["U: q1"])["input_ids"][0]
    # the same batches as encoding the decoded samples eagerly
    eager = encode(Proc(), [s.materialize() for s in view], chunk=2)
    assert not eager.lazy and eager.image_inputs["pixel_values"].shape[0] == 3
    for cut in (train_batch, prompt_batch):
        for idx in ([2, 0], [1]):
            a, b = cut(enc, idx), cut(eager, idx)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mixed = concat([subset(enc, [1]), subset(eager, [0, 2])])  # lazy wins: images per batch
    assert mixed.lazy and len(mixed) == 3
    assert torch.equal(train_batch(mixed, [0, 1, 2])["pixel_values"],
                       train_batch(eager, [1, 0, 2])["pixel_values"])


# ------------------------------------------------------------------------------ CoIN


def test_coin_questions_join_answers_with_grounding(tmp_path, cache):
    a = png(tmp_path / "COCO" / "a.jpg.png", 30)
    png(tmp_path / "COCO" / "b.png", 31)
    jsonl(tmp_path / "questions.jsonl", [
        {"question_id": 11, "image": "COCO/a.jpg.png", "text": "Where is the dog?",
         "category": "grounding"},
        {"question_id": "q2", "image": "COCO/b.png", "text": "<image>\nWhat is written?"},
    ])
    jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "q2", "answers": ["stop", "Stop", "stop"]},
        {"question_id": 11, "answer_bbox": "[0.1, 0.25, 0.5, 0.75]", "size": [640, 480]},
    ])
    view = read_coin(tmp_path / "questions.jsonl", tmp_path / "answers.jsonl", task="Grounding",
                     **cache)
    g, t = view[0], view[1]
    assert (g.task, g.question, g.answer) == ("Grounding", "Where is the dog?",
                                              "[0.1, 0.25, 0.5, 0.75]")
    assert g.meta["box"] == [0.1, 0.25, 0.5, 0.75] and g.meta["size"] == [640, 480]
    assert g.meta["question_id"] == 11 and g.meta["category"] == "grounding"
    np.testing.assert_array_equal(g.image, a)
    assert (t.question, t.answer, t.meta["answers"]) == ("What is written?", "stop",
                                                         ["stop", "Stop", "stop"])


def test_coin_answers_in_the_test_file_and_scienceqa_problems(tmp_path, cache):
    png(tmp_path / "i.png", 32)
    (tmp_path / "test.json").write_text(json.dumps([
        {"question_id": "p1", "image": "i.png", "text": "Which? A. x B. y", "answer": "B"}]))
    assert read_coin(tmp_path / "test.json", **cache)[0].answer == "B"
    (tmp_path / "problems.json").write_text(json.dumps(
        {"p1": {"answer": 2, "choices": ["x", "y", "z"]}}))
    view = read_coin(tmp_path / "test.json", tmp_path / "problems.json", **cache)
    assert view[0].answer == "C" and view[0].meta["choices"] == ["x", "y", "z"]


def test_coin_validation(tmp_path):
    png(tmp_path / "i.png", 33)
    q = tmp_path / "q.jsonl"
    jsonl(q, [
        {"question_id": 1, "image": "i.png", "text": "a"},
        {"question_id": 2, "image": "i.png", "text": "b"},
        {"question_id": 1, "image": "i.png", "text": "c"},
        {"question_id": 3, "image": "nope.png", "text": "d"},
        {"question_id": 4, "image": "i.png"},
    ])
    ans = tmp_path / "a.jsonl"
    jsonl(ans, [{"question_id": 1, "answer": "x"}, {"question_id": 1, "answer": "y"},
                {"question_id": 3, "answer": "z"}, {"question_id": 4, "answer": "w"},
                {"question_id": 9, "answer": "v"}, {"question_id": 5, "answer_bbox": "[1, 2]"}])
    report = check_coin(q, ans)
    text = [str(p) for p in report.problems]
    assert f"error: {ans}: record 1 (line 2, id '1'): field 'question_id': duplicate " \
           "question_id '1' (first at record 0)" in text
    assert any(f"{ans}: record 5 (line 6, id '5'): field 'answer_bbox'" in m for m in text)
    assert f"error: {q}: record 1 (line 2, id '2'): field 'answer': no answer for " \
           f"question_id '2' in {ans}" in text
    assert any(f"{q}: record 2 (line 3, id '1'): field 'question_id': duplicate" in m
               for m in text)
    assert f"error: {q}: record 3 (line 4, id '3'): field 'image': image not found: " \
           f"{tmp_path / 'nope.png'}" in text
    assert any(f"{q}: record 4 (line 5, id '4'): field 'text'" in m for m in text)
    assert any(m.startswith("warning:") and "1 answer(s) match no question: '9'" in m
               for m in text)
    assert report.counts["samples"] == 1 and report.counts["duplicate_ids"] == 2


def test_write_coin_round_trips_grounding_and_vqa(tmp_path, cache):
    samples = make_samples("grounding", 2, "test", seed=1) + make_samples("ocr", 1, "test", 1)
    write_coin(samples, tmp_path / "q.jsonl", tmp_path / "a.jsonl")
    answers = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert answers[0]["answer_bbox"] == samples[0].answer and answers[0]["size"] == [48, 48]
    assert answers[2] == {"question_id": 2, "answer": samples[2].answer}
    back = read_coin(tmp_path / "q.jsonl", tmp_path / "a.jsonl", **cache)
    assert [(s.question, s.answer) for s in back] == [(s.question, s.answer) for s in samples]
    assert back[0].meta["box"] == [float(v) for v in samples[0].meta["box"]]
    np.testing.assert_array_equal(back[2].image, samples[2].image)
    # without an answer file the answers sit in the question records (CoIN's test.json)
    write_coin(samples, tmp_path / "test.json")
    assert [s.answer for s in read_coin(tmp_path / "test.json", **cache)] == \
        [s.answer for s in samples]


# ------------------------------------------------------------------------------ benchmarks


def test_pope_files_splits_and_labels(tmp_path, cache):
    png(tmp_path / "val2014" / "COCO_1.jpg", 40)
    img = np.asarray(PIL.Image.open(tmp_path / "val2014" / "COCO_1.jpg").convert("RGB"))
    rec = lambda i, label: {"question_id": i, "image": "COCO_1.jpg",  # noqa: E731
                            "text": f"Is there a cat {i}?", "label": label}
    jsonl(tmp_path / "coco_pope_random.json", [rec(1, "yes"), rec(2, "no")])
    jsonl(tmp_path / "coco_pope_adversarial.json", [rec(1, "no")])
    files = [tmp_path / "coco_pope_random.json", tmp_path / "coco_pope_adversarial.json"]
    view = read_pope(files, tmp_path / "val2014", **cache)
    assert [(s.meta["split"], s.answer) for s in view] == [
        ("random", "yes"), ("random", "no"), ("adversarial", "no")]
    assert view[0].question == "Is there a cat 1?" and view[0].task == "pope"
    np.testing.assert_array_equal(view[2].image, img)

    jsonl(tmp_path / "bad_pope.jsonl", [rec(1, "maybe") | {"category": "random"},
                                        rec(2, "yes") | {"category": "random"},
                                        rec(2, "yes") | {"category": "random"}])
    report = check_pope(tmp_path / "bad_pope.jsonl", tmp_path / "val2014")
    assert [p.field for p in report.errors] == ["label", "question_id"]
    assert "expected 'yes' or 'no', got 'maybe'" in str(report.errors[0])

    write_pope(view, tmp_path / "out" / "pope.jsonl")
    again = read_pope(tmp_path / "out" / "pope.jsonl", **cache)
    assert [(s.meta["split"], s.question, s.answer) for s in again] == \
        [(s.meta["split"], s.question, s.answer) for s in view]


def test_mme_both_layouts_pairs_and_errors(tmp_path, cache):
    root = tmp_path / "MME_Benchmark_release_version"
    e = png(root / "existence" / "000.png", 41)
    (root / "existence" / "000.txt").write_text(
        "Is there a dog? Please answer yes or no.\tYes\n"
        "Is there a cow? Please answer yes or no.\tNo\n")
    png(root / "celebrity" / "images" / "tt01.jpg", 42)  # JPEG: compare with its decoding
    c = np.asarray(PIL.Image.open(root / "celebrity" / "images" / "tt01.jpg").convert("RGB"))
    (root / "celebrity" / "questions_answers_YN").mkdir(parents=True)
    (root / "celebrity" / "questions_answers_YN" / "tt01.txt").write_text(
        "Is this Ann? Please answer yes or no.\tNo\nIs this Bo? Please answer yes or no.\tYes\n")
    view = read_mme(root, **cache)
    assert len(view) == 4
    assert [s.meta["subtask"] for s in view] == ["celebrity"] * 2 + ["existence"] * 2
    assert {s.meta["category"] for s in view} == {"perception"}
    assert view[2].answer == "Yes" and view[2].question.startswith("Is there a dog?")
    assert view[0].meta["image_id"] == view[1].meta["image_id"] == "celebrity/tt01.jpg"
    np.testing.assert_array_equal(view[0].image, c)
    np.testing.assert_array_equal(view[3].image, e)

    (root / "count").mkdir()
    (root / "count" / "001.txt").write_text("How many? Please answer yes or no.\t3\nno tab\n")
    report = check_mme(root)
    errs = [str(p) for p in report.errors]
    txt = root / "count" / "001.txt"
    assert errs[0] == f"error: {txt}: field 'image': image not found: " \
                      f"{root / 'count' / '001'}.<png|jpg|...>"
    png(root / "count" / "001.png", 43)
    errs = [str(p) for p in check_mme(root).errors]
    assert errs == [
        f"error: {txt}: record 0 (line 1, id 'count/001#0'): field 'answer': "
        "expected Yes or No, got '3'",
        f"error: {txt}: record 1 (line 2, id 'count/001#1'): field 'question': "
        "expected 'question<TAB>answer'"]

    assert [str(p) for p in check_mme(tmp_path / "absent").errors] == [
        f"error: {tmp_path / 'absent'}: MME root folder not found"]

    write_mme(view, tmp_path / "mme_out")
    again = read_mme(tmp_path / "mme_out", **cache)
    assert [(s.meta["image_id"], s.question, s.answer) for s in again] == [
        (s.meta["image_id"].rsplit(".", 1)[0] + ".png", s.question, s.answer) for s in view]
    np.testing.assert_array_equal(again[3].image, e)


def test_mmmu_options_letters_and_validation(tmp_path, cache):
    one = png(tmp_path / "img" / "v1.png", 50)
    two = png(tmp_path / "img" / "v2.png", 51)
    jsonl(tmp_path / "mmmu.jsonl", [
        {"id": "validation_Art_Theory_1", "question": "Which style? <image 1>",
         "options": "['Baroque', 'Cubism', 'Pop art']", "answer": "B",
         "image_1": "img/v1.png"},
        {"id": "validation_Math_2", "question": "Compare <image 1> and <image 2>.",
         "options": ["equal", "not equal"], "answer": "A", "subject": "Math",
         "image_1": "img/v1.png", "image_2": "img/v2.png"},
        {"id": "validation_Math_3", "question": "Value of x?", "options": [], "answer": "4",
         "question_type": "open", "image_1": "img/v2.png"},
    ])
    view = read_mmmu(tmp_path / "mmmu.jsonl", **cache)
    s = view[0]
    assert s.question == ("Which style? <image 1>\nA. Baroque\nB. Cubism\nC. Pop art\n"
                          "Answer with the option's letter from the given choices directly.")
    assert (s.answer, s.meta["subject"], s.meta["options"]) == (
        "B", "Art_Theory", ["Baroque", "Cubism", "Pop art"])
    np.testing.assert_array_equal(s.image, one)
    np.testing.assert_array_equal(view[1].images()[1], two)
    assert (view[2].question, view[2].answer) == ("Value of x?", "4")

    jsonl(tmp_path / "bad.jsonl", [
        {"id": "x1", "question": "q", "options": ["a", "b"], "answer": "C"},
        {"id": "x2", "question": "q", "options": "not a list", "answer": "A"},
        {"id": "x3", "question": "q <image 1>", "options": ["a"], "answer": "A",
         "image_1": "img/none.png"},
    ])
    errs = [str(p) for p in check_mmmu(tmp_path / "bad.jsonl", tmp_path).errors]
    bad = tmp_path / "bad.jsonl"
    assert errs == [
        f"error: {bad}: record 0 (line 1, id 'x1'): field 'answer': expected a letter A-B "
        "for 2 options, got 'C'",
        f"error: {bad}: record 1 (line 2, id 'x2'): field 'options': expected a list of "
        "strings, got \"not a list\"",
        f"error: {bad}: record 2 (line 3, id 'x3'): field 'image_1': image not found: "
        f"{tmp_path / 'img' / 'none.png'}"]

    write_mmmu(view, tmp_path / "out" / "mmmu.json")
    again = read_mmmu(tmp_path / "out" / "mmmu.json", **cache)
    assert [(s.question, s.answer, s.meta["subject"]) for s in again] == \
        [(s.question, s.answer, s.meta["subject"]) for s in view]
    assert len(again[1].images()) == 2


# ------------------------------------------------------------------------------ D-MoLE meta


def test_meta_json_exports_and_reads_a_stream(tmp_path, cache):
    tasks = {"ocr": make_samples("ocr", 2, "train", 3),
             "color_vqa": make_samples("color_vqa", 3, "train", 3)}
    meta_path = write_meta_tasks(tasks, tmp_path / "export")
    meta = read_meta(meta_path)
    assert list(meta) == ["ocr", "color_vqa"]
    assert (meta["ocr"].root, meta["ocr"].annotation, meta["ocr"].length) == (
        "ocr", "ocr/annotation.jsonl", 2)
    views = read_meta_tasks(meta_path, **cache)
    for name, samples in tasks.items():
        assert [s.task for s in views[name]] == [name] * len(samples)
        assert [s.answer for s in views[name]] == [s.answer for s in samples]
        np.testing.assert_array_equal(views[name][1].image, samples[1].image)
    assert check_meta(meta_path).ok

    doc = json.loads(meta_path.read_text())
    doc["ocr"]["length"] = 5
    meta_path.write_text(json.dumps(doc))
    (report_w,) = check_meta(meta_path).warnings
    assert report_w.field == "length" and "length 5 but" in report_w.message


def test_ragged_ids_store_rows_flat():
    from dmole_lab.data.encode import RaggedIds

    rows = [[5, 6, 7], [], [9]]
    r = RaggedIds(rows)
    assert len(r) == 3 and [x.tolist() for x in r] == rows and r[-1].tolist() == [9]
    assert r.flat.dtype == np.int32 and r.flat.nbytes == 4 * 4
    with pytest.raises(IndexError, match="row 3 out of range for 3 rows"):
        r[3]
