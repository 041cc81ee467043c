"""Pre-train the embedded tiny model on the base mix, so that the zero-shot row means something.

Two phases, like a real VLM: the vision tower first learns to see (dmole_lab.models.vision_pretrain,
the stand-in for a pre-trained CLIP), then the whole model learns the base mix.

The base mix teaches what a generic instruction-tuned VLM knows before continual tuning: listing
the objects of a scene ("red circle, number 7") and answering "is there a ...?" questions. None
of the stream's answer formats (sentences, boxes, letters, sums) is in it. The checkpoint is
written in Hugging Face format (weights in float16 to stay small) and is reproducible from the
preset and seed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from dmole_lab.config import RunConfig, TrainConfig, resolve_path, to_dict
from dmole_lab.data.encode import encode
from dmole_lab.data.tasks import make_samples
from dmole_lab.seeding import seed_everything
from dmole_lab.training.evaluation import evaluate
from dmole_lab.training.stage import train_stage

from .anatomy import anatomy_of
from .tiny import TinySpec, build_model, build_processor
from .vision_pretrain import pretrain_vision


def base_mix(n: int, seed: int, exists_share: float = 0.7):
    """``n`` training samples of the base mix: object lists and existence questions.

    Existence answers are two tokens against about ten for a list, so under a token-mean loss
    they need the larger share of samples to be learned at all (at 50% they stayed at chance).
    """
    n_exists = int(round(exists_share * n))
    samples = make_samples("list_objects", n - n_exists, "train", seed, stream=2)
    samples += make_samples("exists", n_exists, "train", seed, stream=2)
    return samples


def pretrain(cfg: RunConfig, progress: bool = True, spec: TinySpec = TinySpec()) -> Path:
    """Train the tiny model from scratch on the base mix and save it to ``cfg.pretrain.out``."""
    pc = cfg.pretrain
    seed_everything(cfg.seed)
    processor = build_processor(spec)
    model = build_model(processor, spec)
    samples = base_mix(pc.n_samples, cfg.seed)
    data = encode(processor, samples)
    vision_losses = pretrain_vision(
        model, data.image_inputs["pixel_values"], samples, pc.vision_steps, pc.vision_lr,
        min(pc.vision_batch_size, len(samples)), cfg.seed, progress=progress)
    train_cfg = replace(TrainConfig(), lr=pc.lr, batch_size=pc.batch_size, epochs=1_000_000,
                        max_steps=pc.steps, weight_decay=0.01)
    # The vision tower keeps what phase 1 taught it; projector and language model learn.
    vision = anatomy_of(model).vision_path + "."
    params = [p for n, p in model.named_parameters() if not n.startswith(vision)]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    log = train_stage(model, data, params, train_cfg, seed=cfg.seed, desc="pretrain",
                      progress=progress)
    for p in params:
        p.requires_grad_(False)
    held_out = {
        "list_objects": encode(processor, make_samples("list_objects", 64, "test", cfg.seed, 3)),
        "pope": encode(processor, make_samples("pope", 96, "test", cfg.seed, 3)),
    }
    scores, _ = evaluate(model, processor, held_out, cfg.eval, stage=0, progress=progress)

    out = resolve_path(pc.out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None,
                                prefix=".pretrain-"))
    model.half().save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "pretrain.json").write_text(json.dumps({
        "config": to_dict(cfg), "spec": spec.__dict__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "final_vision_loss": sum(vision_losses[-50:]) / max(1, len(vision_losses[-50:])),
        "final_loss": sum(log.losses[-50:]) / len(log.losses[-50:]),
        "seconds": log.seconds,
        "held_out": scores[["eval_task", "metric", "value"]].to_dict(orient="records"),
    }, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    out.chmod(0o755)
    return out
