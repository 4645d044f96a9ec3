"""ONNX export: onnxruntime on CPU must reproduce the torch models (keypoints, scores, plan, matches)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from superglue_ros import Features, Matcher, SuperGlue, SuperPoint
from superglue_ros.cli.main import main
from superglue_ros.inference.weights import file_identity, load_into

from conftest import GOLDEN, require, rule_weights

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from superglue_ros.inference.backends.onnx_export import export_models, read_metadata  # noqa: E402
from superglue_ros.inference.backends.onnx_runners import OnnxSuperGlue, OnnxSuperPoint, exports_current  # noqa: E402

SUPERPOINT_CONFIG = {"max_keypoints": 128}
# Few Sinkhorn iterations keep the export quick; threshold 0 keeps every mutual match, so that
# the untrained rule weights give enough matches to compare.
SUPERGLUE_CONFIG = {"sinkhorn_iterations": 30, "match_threshold": 0.0}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch threads spinning beside onnxruntime's workers on two shared cores slow every test several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(weight_files) -> tuple[SuperPoint, SuperGlue]:
    superpoint, superglue = SuperPoint(**SUPERPOINT_CONFIG), SuperGlue(**SUPERGLUE_CONFIG)
    load_into(superpoint, weight_files["superpoint"])
    load_into(superglue, weight_files["superglue"])
    return superpoint.eval(), superglue.eval()


@pytest.fixture(scope="module")
def exported(weight_files, tmp_path_factory) -> tuple[Path, Path]:
    """The files `superglue-ros export-onnx` writes for the test configuration (one export serves all tests)."""
    out = tmp_path_factory.mktemp("onnx")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export-onnx", "--out", str(out), "--superpoint-weights", str(weight_files["superpoint"]),
                     "--superglue-weights", str(weight_files["superglue"]),
                     "--max-keypoints", str(SUPERPOINT_CONFIG["max_keypoints"]),
                     "--sinkhorn-iterations", str(SUPERGLUE_CONFIG["sinkhorn_iterations"]),
                     "--match-threshold", str(SUPERGLUE_CONFIG["match_threshold"])])
    assert code == 0
    assert stdout.getvalue().count("wrote") == 2
    return out / "superpoint.onnx", out / "superglue.onnx"


@pytest.fixture(scope="module")
def runners(exported) -> tuple[OnnxSuperPoint, OnnxSuperGlue]:
    return OnnxSuperPoint(exported[0], SUPERPOINT_CONFIG), OnnxSuperGlue(exported[1], SUPERGLUE_CONFIG)


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture with bright rectangles, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.random((height // 4, width // 4)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 12)), int(rng.integers(0, height - 10))
        image[y:y + 9, x:x + 12] = rng.random()
    return np.clip(image, 0, 1)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping 120x160 crops of one texture (shifted by 6, 4 pixels)."""
    scene = texture(140, 180)
    return torch.from_numpy(scene[8:128, 8:168].copy()), torch.from_numpy(scene[12:132, 14:174].copy())


@pytest.fixture(scope="module")
def pair_features(models, pair) -> tuple[Features, Features]:
    return models[0].extract(pair[0]), models[0].extract(pair[1])


def assert_same_features(onnx: Features, torch_features: Features) -> None:
    assert torch.equal(onnx.keypoints, torch_features.keypoints)
    torch.testing.assert_close(onnx.scores, torch_features.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx.descriptors, torch_features.descriptors, atol=1e-4, rtol=0)
    assert onnx.image_size == torch_features.image_size


@pytest.mark.parametrize("shape", [(120, 160), (100, 212)])
def test_superpoint_onnx_gives_the_torch_keypoints_at_any_size(models, runners, shape):
    image = torch.from_numpy(texture(*shape, seed=shape[1]))
    expected = models[0].extract(image)
    assert len(expected) > 20
    assert_same_features(runners[0].extract(image), expected)


def test_superpoint_onnx_runs_batches(models, runners, pair):
    batch = torch.stack(pair)[:, None]
    for onnx, expected in zip(runners[0].extract(batch), models[0].extract(batch)):
        assert_same_features(onnx, expected)


@pytest.mark.parametrize("counts", [(None, None), (57, 90), (128, 3)])
def test_superglue_onnx_gives_the_torch_plan_and_matches(models, runners, pair_features, counts):
    f0, f1 = (truncate(features, count) for features, count in zip(pair_features, counts))
    expected = models[1].match(f0, f1)
    result = runners[1].match(f0, f1)
    assert result.log_assignment.shape == (len(f0) + 1, len(f1) + 1)
    torch.testing.assert_close(result.log_assignment, expected.log_assignment, atol=1e-4, rtol=0)
    assert torch.equal(result.matches0, expected.matches0)
    assert torch.equal(result.matches1, expected.matches1)
    torch.testing.assert_close(result.matching_scores0, expected.matching_scores0, atol=1e-4, rtol=0)
    if counts == (None, None):
        assert expected.num_matches >= 5


def truncate(features: Features, count: int | None) -> Features:
    if count is None:
        return features
    return Features(features.keypoints[:count], features.scores[:count], features.descriptors[:count],
                    features.image_size)


def test_superglue_onnx_handles_an_empty_side_like_torch(models, runners, pair_features):
    features = pair_features[0]
    empty = Features.empty(features.image_size, features.descriptor_dim)
    for f0, f1 in ((empty, features), (features, empty), (empty, empty)):
        expected, result = models[1].match(f0, f1), runners[1].match(f0, f1)
        assert result.matches0.shape == expected.matches0.shape and result.num_matches == 0
        torch.testing.assert_close(result.log_assignment, expected.log_assignment)


def test_superglue_onnx_redoes_widely_spread_scores_in_the_log_domain(models, runners):
    """Huge descriptors push the score range past what the graph's scaling iterations are for."""
    generator = torch.Generator().manual_seed(3)

    def features(n: int, scale: float) -> Features:
        descriptors = torch.nn.functional.normalize(torch.randn(n, 256, generator=generator), dim=1)
        return Features(torch.rand(n, 2, generator=generator) * 100, torch.rand(n, generator=generator),
                        scale * descriptors, (120, 160))

    for scale, redone in ((1.0, False), (300.0, True)):
        f0, f1 = features(40, scale), features(50, scale)
        timings: dict[str, float] = {}
        result, expected = runners[1].match(f0, f1, timings), models[1].match(f0, f1)
        assert ("sinkhorn" in timings) == redone
        torch.testing.assert_close(result.log_assignment, expected.log_assignment, atol=1e-6 * 3000, rtol=0)
        assert torch.equal(result.matches0, expected.matches0)


def test_metadata_records_what_the_graphs_bake_in(exported, weight_files):
    superglue = read_metadata(exported[1])
    assert superglue["sinkhorn_iterations"] == "30"
    assert superglue["sinkhorn"] == "scaling"
    assert superglue["descriptor_dim"] == "256"
    assert float(superglue["match_threshold"]) == 0.0
    assert superglue["weights"] == file_identity(weight_files["superglue"])
    assert read_metadata(exported[0])["weights"] == file_identity(weight_files["superpoint"])
    assert superglue["superglue_ros_version"]


def test_runner_refuses_a_different_iteration_count(exported):
    with pytest.raises(ValueError, match="sinkhorn_iterations=30"):
        OnnxSuperGlue(exported[1], {"sinkhorn_iterations": 100})


def test_exports_are_recognised_as_current_or_stale(models, exported, weight_files):
    files = (weight_files["superpoint"], weight_files["superglue"])
    assert exports_current(exported, *models, files)
    assert not exports_current(exported, models[0], SuperGlue(sinkhorn_iterations=50), files)
    assert not exports_current(exported, *models, (files[1], files[1]))


def test_matcher_onnxruntime_backend_matches_like_torch(weight_files, exported, pair):
    kwargs = {"superpoint_weights": weight_files["superpoint"], "superglue_weights": weight_files["superglue"],
              "extractor": SUPERPOINT_CONFIG, "superglue": SUPERGLUE_CONFIG}
    stamps = [p.stat().st_mtime_ns for p in exported]
    onnx = Matcher(backend="onnxruntime", onnx_dir=exported[0].parent, **kwargs)
    assert [p.stat().st_mtime_ns for p in exported] == stamps  # reused, not exported again
    images = [(255 * image.numpy()).astype(np.uint8) for image in pair]
    expected, result = Matcher(**kwargs).match(*images), onnx.match(*images)
    assert expected.result.num_matches >= 5
    assert torch.equal(result.result.matches0, expected.result.matches0)
    assert torch.equal(result.features0.keypoints, expected.features0.keypoints)


def test_matcher_rejects_onnxruntime_with_half_precision(weight_files):
    with pytest.raises(ValueError, match="fp32"):
        Matcher(backend="onnxruntime", precision="bf16", superpoint_weights=weight_files["superpoint"],
                superglue_weights=weight_files["superglue"])


def test_cli_export_writes_both_files(exported):
    assert sorted(p.name for p in exported[0].parent.iterdir()) == ["superglue.onnx", "superpoint.onnx"]


def test_log_domain_export_has_no_float64_and_matches_torch(models, pair_features, weight_files, tmp_path):
    """The variant for runtimes without float64 (TensorRT): float32 log-domain Sinkhorn in the graph.

    A two-layer SuperGlue keeps this export quick; the Sinkhorn part is the same at any depth.
    """
    import onnx

    superglue = SuperGlue(GNN_layers=["self", "cross"], **SUPERGLUE_CONFIG)
    superglue.load_state_dict(rule_weights(superglue))
    torch.save(superglue.state_dict(), tmp_path / "small.pth")
    paths = export_models(models[0], superglue.eval(), tmp_path, (weight_files["superpoint"], tmp_path / "small.pth"),
                          sinkhorn="log-domain")
    graph = onnx.load(paths[1]).graph
    double = onnx.TensorProto.DOUBLE
    assert not [n for n in graph.node if n.op_type == "Cast" and onnx.helper.get_node_attr_value(n, "to") == double]
    assert not [t for t in graph.initializer if t.data_type == double]
    assert read_metadata(paths[1])["sinkhorn"] == "log-domain"
    result = OnnxSuperGlue(paths[1], SUPERGLUE_CONFIG).match(*pair_features)
    expected = superglue.match(*pair_features)
    torch.testing.assert_close(result.log_assignment, expected.log_assignment, atol=1e-4, rtol=0)
    assert torch.equal(result.matches0, expected.matches0)


def test_cli_export_rejects_an_unsupported_opset(weight_files, tmp_path, capsys):
    code = main(["export-onnx", "--out", str(tmp_path), "--opset", "11", "--superpoint-weights",
                 str(weight_files["superpoint"]), "--superglue-weights", str(weight_files["superglue"])])
    assert code == 2
    assert "opset must be an integer in [14, 20]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_export_reports_missing_weights_in_one_line(weight_files, tmp_path, capsys):
    code = main(["export-onnx", "--out", str(tmp_path / "out"), "--superpoint-weights", str(tmp_path / "absent.pth"),
                 "--superglue-weights", str(weight_files["superglue"])])
    assert code == 2
    error = capsys.readouterr().err
    assert "absent.pth" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_export_with_default_weights(tmp_path, capsys, monkeypatch):
    """--weights auto (the default): without official weights, one line saying SuperPoint is needed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SUPERGLUE_ROS_WEIGHTS_DIR", raising=False)
    code = main(["export-onnx", "--out", str(tmp_path / "out"), "--weights-dir", str(tmp_path / "empty")])
    assert code == 2
    error = capsys.readouterr().err
    assert "has no SuperPoint" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_golden_synthetic_pair_through_onnxruntime(tmp_path):
    """Reference weights at 1024 keypoints and 100 Sinkhorn iterations (../shared/golden/synthetic)."""
    folder = require(GOLDEN / "synthetic")
    reference = np.load(folder / "reference.npz")
    weights = (folder / "superpoint.pth", folder / "superglue.pth")
    superpoint, superglue = SuperPoint(max_keypoints=1024), SuperGlue()
    load_into(superpoint, weights[0])
    load_into(superglue, weights[1])
    paths = export_models(superpoint.eval(), superglue.eval(), tmp_path, weights)
    onnx_superpoint, onnx_superglue = OnnxSuperPoint(paths[0], superpoint.config), OnnxSuperGlue(paths[1])
    for i in (0, 1):
        logits, _ = onnx_superpoint.session.run(None, {"image": reference[f"image{i}"][None, None]})
        assert np.abs(logits[0] - reference[f"sp_logits{i}"]).max() <= 1e-5
        # The synthetic image has exact score ties that 1e-6 differences may reorder: compare as sets.
        keypoints = onnx_superpoint.extract(torch.from_numpy(reference[f"image{i}"])).keypoints.numpy()
        assert set(map(tuple, keypoints)) == set(map(tuple, reference[f"keypoints{i}"]))
    stored = [Features(torch.from_numpy(reference[f"keypoints{i}"]), torch.from_numpy(reference[f"scores{i}"]),
                       torch.from_numpy(np.ascontiguousarray(reference[f"descriptors{i}"].T)), (480, 640))
              for i in (0, 1)]
    result = onnx_superglue.match(*stored)
    assert np.abs(result.log_assignment.numpy() - reference["log_assignment"]).max() <= 1e-4
    np.testing.assert_array_equal(result.matches0.numpy(), reference["matches0"])
    assert result.num_matches == 137
