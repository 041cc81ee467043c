import torch

from dmole_lab.data.tasks import make_samples
from dmole_lab.data.world import CELL
from dmole_lab.models.vision_pretrain import HEADS, CellProbe, cell_labels


def test_cell_labels_match_scene_objects():
    samples = make_samples("textcap", 4, "train", 0)
    labels = cell_labels(samples)
    for i, s in enumerate(samples):
        occupied = {o["cell"][0] * 3 + o["cell"][1]: o for o in s.meta["objects"]}
        for c in range(9):
            kind = labels["kind"][i, c].item()
            if c not in occupied:
                assert kind == 0 and labels["shape"][i, c] == -100
                continue
            o = occupied[c]
            assert HEADS["kind"][kind] == o["kind"]
            assert labels["x"][i, c] == o["box"][0] - o["cell"][1] * CELL
            if o["kind"] == "digit":
                assert labels["digit"][i, c] == o["value"] and labels["colour"][i, c] == -100
            else:
                assert HEADS["shape"][labels["shape"][i, c]] == o["shape"]


def test_cell_probe_pools_patches_to_grid_cells():
    probe = CellProbe(hidden=8, patches_per_side=6)
    out = probe(torch.randn(2, 36, 8))
    assert out["colour"].shape == (2, 9, len(HEADS["colour"]))
