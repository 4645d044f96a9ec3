"""The training loop: loss, steps, validation, checkpoints and exact resume.

A trained model is scored like any matcher, by ``superglue-ros eval``: the
synthetic homography benchmark (``eval FOLDER --synthetic-homography
--weights MODEL.pt``) and pair lists with ground-truth poses, each with SIFT
+ mutual nearest neighbour + ratio test as a baseline on the same keypoints.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import match_counts
from ..inference.model_files import build_extractor, load_open_model, save_open_model
from ..inference.weights import load_tensor_file
from ..files.outputs import atomic_path, signals_deferred
from ..files.images import image_files
from ..models.optimal_transport import extract_matches
from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.types import DEFAULT_BUDGET
from .batches import Batch, load_gray, split_images, step_batches, validation_batches
from .config import DESCRIPTOR_DIMS, RUN_FIELDS, TrainConfig, extractor_config, superglue_config

CHECKPOINT_FORMAT = 1
DESCRIPTOR_TEMPERATURE = 0.1  # --start descriptors: cosine 0.1 apart is a factor e in the assignment's odds
CHECKPOINT_KEYS = {"format", "step", "model", "optimizer", "train_config", "history"}


def nll_loss(log_assignment: torch.Tensor, gt0: torch.Tensor, gt1: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the ground-truth assignment, dustbins included.

    log_assignment (B, N+1, M+1); gt0 (B, N), gt1 (B, M) as from ground_truth_matches.
    Terms: -log P[i, j] per true match, -log P[i, dustbin] per unmatched keypoint
    of image 0, -log P[dustbin, j] per unmatched keypoint of image 1 (ignored
    keypoints contribute nothing). Averaged per pair, then over the batch.
    """
    n, m = gt0.shape[1], gt1.shape[1]
    matched = log_assignment[:, :n, :m].gather(2, gt0.clamp(min=0)[..., None])[..., 0]
    zero = log_assignment.new_zeros(())
    total = (torch.where(gt0 >= 0, matched, zero).sum(1)
             + torch.where(gt0 == -1, log_assignment[:, :n, m], zero).sum(1)
             + torch.where(gt1 == -1, log_assignment[:, n, :m], zero).sum(1))
    count = (gt0 >= 0).sum(1) + (gt0 == -1).sum(1) + (gt1 == -1).sum(1)
    return (-total / count.clamp(min=1)).mean()


def learning_rate(config: TrainConfig, step: int) -> float:
    """Constant, then a linear decay to a tenth over the last 40% of the steps (settles the weights)."""
    decay_start = 0.6 * config.steps
    if step < decay_start:
        return config.lr
    return config.lr * (1.0 - 0.9 * (step - decay_start) / max(config.steps - decay_start, 1))


def training_step(model: SuperGlue, optimizer: torch.optim.Optimizer, batch: Batch, lr: float) -> float:
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = nll_loss(model(*batch.inputs())["log_assignment"], batch.gt0, batch.gt1)
    if not torch.isfinite(loss):  # diverged: stop before the update spreads NaN into every weight
        raise ValueError(f"training diverged: the loss is {float(loss.detach())} (try a lower --lr than {lr:g}); "
                         f"the checkpoints written so far are kept")
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def validate(model: SuperGlue, batches: Sequence[Batch], device: torch.device) -> tuple[float, float]:
    """Match precision and recall against the ground-truth labels, over all validation pairs.

    Predictions for ignored keypoints (label -2) count neither way, as in the loss.
    """
    model.eval()
    totals = np.zeros(3, dtype=np.int64)
    for batch in batches:
        batch = batch.to(device)
        log_assignment = model(*batch.inputs())["log_assignment"]
        matches0 = extract_matches(log_assignment, model.config["match_threshold"])[0]
        totals += match_counts(matches0.cpu().numpy(), batch.gt0.cpu().numpy())
    correct, predicted, positives = (int(t) for t in totals)
    return correct / max(predicted, 1), correct / max(positives, 1)


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.ckpt.pt")


def check_finite(model: SuperGlue, step: int) -> None:
    """A model with NaN or infinite weights is never written (matching would refuse it anyway)."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"training diverged by step {step}: non-finite weights in {', '.join(bad[:3])} "
                         f"(try a lower --lr); the checkpoints written so far are kept")


def save_checkpoint(path: Path, model: SuperGlue, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig, history: list[dict[str, float]]) -> None:
    check_finite(model, step)
    with signals_deferred(), atomic_path(path) as temporary:  # a run killed while saving keeps its previous checkpoint
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "superglue_config": dict(model.config),
                    "train_config": {**dataclasses.asdict(config), "crop": list(config.crop)}, "history": history},
                   temporary)


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; a model or weight file, a plain pickle or a file
    cut short is a one-line error, not a KeyError later."""
    blob = load_tensor_file(path, "checkpoint", "resume from the .ckpt.pt file superglue-ros train writes")
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT or not CHECKPOINT_KEYS <= set(blob):
        raise ValueError(f"--resume {path}: not a checkpoint of superglue-ros train (a model or weight file? "
                         f"resume from the .ckpt.pt file it writes beside the model)")
    return blob


def resumed_config(config: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """The checkpoint's run settings, with this invocation's steps, output, device and intervals."""
    stored = dict(checkpoint["train_config"])
    if "features" in stored:  # checkpoints from before the extractor had its one name
        stored["extractor"] = stored.pop("features")
    stored.setdefault("start", "random")  # checkpoints from before --start began from random weights
    run = {name: stored[name] for name in RUN_FIELDS if name in stored}  # older runs lack newer fields
    run["crop"] = tuple(run["crop"])
    return dataclasses.replace(config, **run)


def inherit_extractor(config: TrainConfig) -> TrainConfig:
    """A fine-tuning run keeps the SIFT contrast threshold its --init model was trained on unless told
    otherwise: a model meets the keypoints it learnt on, whichever file it started from."""
    if config.init is None or config.contrast_threshold is not None or config.extractor != "sift":
        return config
    extractor, _, _ = load_open_model(config.init)
    if not isinstance(extractor, SIFT):
        return config
    return dataclasses.replace(config, contrast_threshold=extractor.config["contrast_threshold"])


def initialise_from(model: SuperGlue, path: str) -> None:
    """Start from the weights of a model file (fine-tuning), possibly a shallower one (growing).

    A model with fewer attention layers fills the first layers; each added
    layer starts with its residual update at zero (last MLP projection), so
    the grown model computes exactly what the file's model did and training
    goes on from there instead of from scratch. Likewise a model without
    scale/orientation inputs gives a model with them zero weights on those.
    """
    _, superglue, _ = load_open_model(path)
    architecture = ("descriptor_dim", "keypoint_encoder", "num_heads")
    theirs = {key: superglue.config[key] for key in architecture}
    ours = {key: model.config[key] for key in architecture}
    layers, known = list(model.config["GNN_layers"]), list(superglue.config["GNN_layers"])
    if (theirs != ours or layers[:len(known)] != known
            or superglue.config["scale_orientation"] > model.config["scale_orientation"]):
        raise ValueError(f"--init {path}: its SuperGlue {theirs} with layers {known} does not fit this run's "
                         f"{ours} with layers {layers} (match --extractor and --scale-orientation; "
                         "--layers may only grow)")
    state = superglue.state_dict()
    first = "kenc.encoder.0.weight"
    width = model.kenc.encoder[0].weight.shape[1]
    state[first] = torch.cat([state[first], state[first].new_zeros(
        (state[first].shape[0], width - state[first].shape[1], 1))], dim=1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("gnn.layers.") for key in missing):
        raise ValueError(f"--init {path}: unexpected weights {unexpected or missing}")
    with torch.no_grad():
        for layer in model.gnn.layers[len(known):]:
            zero_update(layer.mlp[-1])


def zero_update(conv: torch.nn.Conv1d) -> None:
    """A residual branch's last projection at zero: the branch adds nothing until training moves it."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()


def start_from_descriptors(model: SuperGlue, temperature: float = DESCRIPTOR_TEMPERATURE) -> None:
    """``--start descriptors``: the untrained model scores a pair of keypoints by their descriptors'
    cosine / ``temperature`` and Sinkhorn makes that a soft mutual-nearest-neighbour assignment.

    Every residual update of the GNN and the keypoint encoding start at zero (their last projections),
    so the matching descriptors are the inputs, and the final projection is the identity scaled so that
    SuperGlue's ``<a, b> / sqrt(D)`` is ``cos(a, b) / temperature`` for the unit-length descriptors the
    front ends give. Training from random weights spends thousands of CPU steps before its recall leaves
    the floor; from here it starts at what mutual nearest neighbours find.
    """
    dim = model.config["descriptor_dim"]
    zero_update(model.kenc.encoder[-1])
    for layer in model.gnn.layers:
        zero_update(layer.mlp[-1])
    with torch.no_grad():
        model.final_proj.weight.copy_(torch.eye(dim)[..., None] * (dim ** 0.5 / temperature) ** 0.5)
        model.final_proj.bias.zero_()


def train(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training; writes checkpoints and the final model file, returns its meta."""
    from tqdm import tqdm

    device = torch.device(config.device)
    checkpoint = load_checkpoint(config.resume) if config.resume else None
    config = resumed_config(config, checkpoint) if checkpoint is not None else inherit_extractor(config)
    torch.manual_seed(config.seed)
    extractor = build_extractor(extractor_config(config.extractor, config.num_keypoints, config.contrast_threshold))
    train_paths, val_paths = split_images(image_files(config.images))
    train_images = [load_gray(p, config.max_side, config.max_image_pixels) for p in train_paths]
    val_images = [load_gray(p, config.max_side, config.max_image_pixels) for p in val_paths]
    model_config = superglue_config(DESCRIPTOR_DIMS[config.extractor], config.layers, config.sinkhorn_iterations,
                                    config.scale_orientation)
    model = SuperGlue(**model_config)
    if config.init and checkpoint is None:
        initialise_from(model, config.init)
    elif config.start == "descriptors" and checkpoint is None:
        start_from_descriptors(model)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start, history = 0, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start, history = int(checkpoint["step"]), list(checkpoint["history"])
    val_batches = validation_batches(val_images, extractor, config)
    began = time.perf_counter()
    bar = tqdm(step_batches(train_images, extractor, config, start), initial=start, total=config.steps,
               disable=not progress, desc="train", dynamic_ncols=True)
    precision = recall = float("nan")
    saved = done = start
    try:
        for step, batch in enumerate(bar, start):
            batch = batch.to(device)
            with signals_deferred():  # a signal ends the run between steps, never inside an update
                loss = training_step(model, optimizer, batch, learning_rate(config, step))
                done = step + 1
            if done % config.val_every == 0 or done == config.steps:
                precision, recall = validate(model, val_batches, device)
                history.append({"step": done, "loss": loss, "precision": precision, "recall": recall})
            bar.set_postfix(loss=f"{loss:.3f}", P=f"{precision:.3f}", R=f"{recall:.3f}")
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_checkpoint(checkpoint_path(config.out), model, optimizer, done, config, history)
                saved = done
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: keep every finished step
        if done > saved:
            save_checkpoint(checkpoint_path(config.out), model, optimizer, done, config, history)
        bar.close()
        print(f"superglue-ros train: stopped after step {done}; continue with --resume {checkpoint_path(config.out)}"
              if done else "superglue-ros train: stopped before the first step; nothing written", file=sys.stderr)
        raise
    check_finite(model, done)
    meta = {"steps": config.steps, "train_images": len(train_paths), "val_images": len(val_paths),
            "wall_time_s_this_run": round(time.perf_counter() - began, 1), "history": history,
            "train_config": {k: v for k, v in dataclasses.asdict(config).items() if k in RUN_FIELDS}}
    meta["train_config"]["crop"] = list(config.crop)
    stored = extractor_config(config.extractor, DEFAULT_BUDGET, config.contrast_threshold)
    save_open_model(config.out, model.cpu(), stored, meta)
    return meta
