import re

import numpy as np
import pytest

from dmole_lab.analysis.scoring import parse_box
from dmole_lab.config import StreamConfig
from dmole_lab.data.stream import build_stream
from dmole_lab.data.tasks import GENERAL_SETS, TASKS, make_samples, task_spec
from dmole_lab.data.world import IMAGE_SIZE, digit_pool


@pytest.mark.parametrize("name", list(TASKS) + list(GENERAL_SETS))
def test_task_samples_are_well_formed_and_deterministic(name):
    a = make_samples(name, 6, "train", seed=3)
    b = make_samples(name, 6, "train", seed=3)
    c = make_samples(name, 6, "train", seed=4)
    assert [s.answer for s in a] == [s.answer for s in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))
    for s in a:
        assert s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and s.image.dtype == np.uint8
        assert s.question and s.answer and s.task == name
    spec = task_spec(name)
    if spec.metric == "option":
        for s in a:  # the answer letter names the option that holds the true value
            options = dict(re.findall(r"\b([a-e])\. (\w+)", s.question))
            shapes = [o for o in s.meta["objects"] if o["kind"] == "shape"]
            truth = str(len(shapes)) if name == "count_mc" else shapes[0]["colour"]
            assert options[s.answer] == truth
    if spec.metric == "iou":
        for s in a:
            box = parse_box(s.answer)
            assert box == tuple(s.meta["box"]) and 0 <= box[0] < box[2] <= IMAGE_SIZE


def test_train_and_test_differ_and_digit_pools_are_disjoint():
    tr = make_samples("ocr", 5, "train", 0)
    te = make_samples("ocr", 5, "test", 0)
    assert not any(np.array_equal(x.image, y.image) for x, y in zip(tr, te))
    a, _ = digit_pool("train")
    b, _ = digit_pool("test")
    assert len(a) + len(b) == 1797
    flat_a = {x.tobytes() for x in a}
    assert sum(x.tobytes() in flat_a for x in b) < 5  # the bundled set has a few duplicates


def test_arith_answer_is_digit_plus_addend():
    for s in make_samples("arith_vqa", 20, "train", 0):
        digit = [o for o in s.meta["objects"] if o["kind"] == "digit"][0]["value"]
        assert int(s.answer) == digit + s.meta["addend"]


def test_pope_set_is_balanced_and_negatives_are_absent():
    samples = make_samples("pope", 200, "test", 0, stream=1)
    answers = [s.answer for s in samples]
    assert set(answers) == {"yes", "no"} and 70 < answers.count("yes") < 130
    for s in samples:
        named = s.question.removeprefix("is there a ").removesuffix(" in the image?")
        present = {f"{o['colour']} {o['shape']}" for o in s.meta["objects"] if o["kind"] == "shape"}
        assert (named in present) == (s.answer == "yes")


def test_general_set_is_the_pretraining_listing_on_test_scenes():
    s = make_samples("general", 3, "test", 0, stream=1)
    assert all(x.question == "what is in the image?" for x in s)
    assert all(x.answer.count(",") == len(x.meta["objects"]) - 1 for x in s)


@pytest.mark.parametrize("tasks,fragment", [
    ((), "empty"), (("caption", "nope"), "unknown task"), (("ocr", "ocr"), "repeats"),
])
def test_stream_order_errors(tasks, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_stream(StreamConfig(tasks=tasks), progress=False)


def test_empty_task_is_an_error():
    with pytest.raises(ValueError, match="n_train=0"):
        build_stream(StreamConfig(tasks=("ocr",), n_train=0), progress=False)
    with pytest.raises(ValueError, match="empty"):
        make_samples("ocr", 0, "train", 0)


def test_stream_sizes_and_order():
    s = build_stream(StreamConfig(tasks=("ocr", "caption"), n_train=3, n_test=2, n_general=5,
                                  general=("general", "pope")), progress=False)
    assert s.tasks == ("ocr", "caption")
    assert [len(s.train[t]) for t in s.tasks] == [3, 3]
    assert list(s.eval_sets()) == ["ocr", "caption", "general", "pope"]
    assert len(s.general["pope"]) == 5
    with pytest.raises(ValueError, match="allowed: general, pope"):
        build_stream(StreamConfig(tasks=("ocr",), general=("mme",)), progress=False)
