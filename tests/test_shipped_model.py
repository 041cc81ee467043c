"""The embedded default as shipped in data/: loadable, small, and the main job's smoke run."""

from dmole_lab.cli import main
from dmole_lab.config import ModelConfig, resolve_path
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model


def test_shipped_tiny_llava_loads_through_from_pretrained():
    path = resolve_path("data/tiny-llava")
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 20 * 2**20
    model, processor = load_model(ModelConfig(path=str(path), device="cpu"))
    an = anatomy_of(model)
    assert an.n_layers("vision") >= 6 and an.n_layers("llm") >= 6
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 1e7
    assert type(processor).__name__ == "LlavaProcessor"


def test_main_job_smoke(tmp_path, capsys):
    assert main(["run", "--preset", "smoke", "--quiet", f"--runs_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "score matrix" in out and "BWT" in out
    assert len(list(tmp_path.glob("*/figures/score_matrix.png"))) == 1
