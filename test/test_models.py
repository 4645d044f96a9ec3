"""Model configuration, state-dict layout, edge cases and batching of SuperPoint/SuperGlue."""
from __future__ import annotations

import pytest
import torch

from superglue_ros import Features, MatchResult, SuperGlue, SuperPoint

from conftest import GOLDEN, require, rule_weights


@pytest.fixture(scope="module")
def superpoint() -> SuperPoint:
    model = SuperPoint(max_keypoints=256).eval()
    model.load_state_dict(rule_weights(model))
    return model


@pytest.fixture(scope="module")
def superglue() -> SuperGlue:
    model = SuperGlue(sinkhorn_iterations=30).eval()
    model.load_state_dict(rule_weights(model))
    return model


def textured(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Blurred noise: plenty of corners for any weights."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 1, height // 4 + 1, width // 4 + 1), generator=gen)
    return torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear")[0, 0]


def random_features(n: int, size=(120, 160), seed: int = 0, dim: int = 256) -> Features:
    gen = torch.Generator().manual_seed(seed)
    keypoints = torch.rand((n, 2), generator=gen) * torch.tensor([size[1] - 1, size[0] - 1])
    descriptors = torch.nn.functional.normalize(torch.randn((n, dim), generator=gen), dim=1)
    return Features(keypoints, torch.rand(n, generator=gen), descriptors, size)


def test_state_dict_layout_is_the_official_one():
    assert len(SuperPoint().state_dict()) == 24
    assert len(SuperGlue().state_dict()) == 339
    sp_official = torch.load(require(GOLDEN / "synthetic" / "superpoint.pth"))
    sg_official = torch.load(GOLDEN / "synthetic" / "superglue.pth")
    for model, official in ((SuperPoint(), sp_official), (SuperGlue(), sg_official)):
        ours = model.state_dict()
        assert list(ours) == list(official)
        assert all(ours[k].shape == official[k].shape for k in ours)


@pytest.mark.parametrize("model, config, message", [
    (SuperPoint, {"nms_radius": -1}, "nms_radius"),
    (SuperPoint, {"keypoint_threshold": 1.5}, "keypoint_threshold"),
    (SuperPoint, {"max_keypoints": 0}, "max_keypoints"),
    (SuperPoint, {"remove_borders": 2.5}, "remove_borders"),
    (SuperGlue, {"sinkhorn_iterations": -3}, "sinkhorn_iterations"),
    (SuperGlue, {"match_threshold": 2}, "match_threshold"),
    (SuperGlue, {"GNN_layers": ["self", "sideways"]}, "GNN_layers"),
    (SuperGlue, {"descriptor_dim": 130}, "divisible"),
    (SuperGlue, {"no_such_option": 1}, "unknown"),
])
def test_invalid_configuration_names_parameter_and_range(model, config, message):
    with pytest.raises(ValueError, match=message):
        model(**config)


def test_defaults_are_the_reference_defaults():
    assert SuperPoint().config == {"descriptor_dim": 256, "nms_radius": 4, "keypoint_threshold": 0.005,
                                   "max_keypoints": -1, "remove_borders": 4}
    config = SuperGlue().config
    assert config["GNN_layers"] == ["self", "cross"] * 9 and config["keypoint_encoder"] == [32, 64, 128, 256]
    assert (config["sinkhorn_iterations"], config["match_threshold"], config["descriptor_dim"]) == (100, 0.2, 256)


@pytest.mark.parametrize("image", [torch.rand((5, 7)), torch.rand((7, 300)), torch.rand((300, 7))],
                         ids=["tiny", "thinner-than-a-cell", "narrower-than-a-cell"])
def test_images_smaller_than_a_cell_give_empty_features(superpoint, image):
    features = superpoint.extract(image)
    assert len(features) == 0
    assert features.descriptors.shape == (0, 256) and features.image_size == tuple(image.shape)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_images_match_without_error(superpoint, superglue, value):
    """No texture: whatever the weights detect, the pipeline yields well-formed output."""
    features = superpoint.extract(torch.full((64, 80), value))
    assert features.descriptors.shape == (len(features), 256)
    assert not torch.isnan(features.descriptors).any()
    assert_well_formed(superglue.match(features, features), len(features), len(features))


@pytest.mark.parametrize("height, width", [(61, 83), (100, 133), (8, 8)])
def test_odd_sizes_keep_keypoints_inside_the_image(superpoint, height, width):
    features = superpoint.extract(textured(height, width))
    assert features.image_size == (height, width)
    if len(features):
        assert bool((features.keypoints[:, 0] < width).all()) and bool((features.keypoints[:, 1] < height).all())
        torch.testing.assert_close(features.descriptors.norm(dim=1), torch.ones(len(features)))


def assert_well_formed(result: MatchResult, n: int, m: int) -> None:
    assert result.matches0.shape == (n,) and result.matches1.shape == (m,)
    assert result.matching_scores0.shape == (n,) and result.matching_scores1.shape == (m,)
    assert result.log_assignment.shape == (n + 1, m + 1)


@pytest.mark.parametrize("n, m", [(0, 0), (0, 5), (5, 0), (1, 1), (1, 6)])
def test_degenerate_keypoint_counts_give_well_formed_results(superglue, n, m):
    result = superglue.match(random_features(n, seed=1), random_features(m, seed=2))
    assert_well_formed(result, n, m)
    if n == 0 or m == 0:
        assert result.num_matches == 0
    assert not torch.isnan(result.log_assignment).any()


def test_batch_with_different_counts_equals_one_pair_at_a_time():
    superglue = SuperGlue(sinkhorn_iterations=30, match_threshold=0.0).eval()  # every mutual match counts
    superglue.load_state_dict(rule_weights(superglue))
    counts = [(40, 25), (13, 51), (0, 9), (30, 30)]
    batch0 = [random_features(n, seed=10 + i) for i, (n, _) in enumerate(counts)]
    batch1 = [random_features(m, seed=20 + i) for i, (_, m) in enumerate(counts)]
    # Make the pairs matchable: image 1 shares keypoints and descriptors with image 0.
    batch1 = [Features(torch.cat([f1.keypoints, f0.keypoints[:10] + 1.0]), torch.cat([f1.scores, f0.scores[:10]]),
                       torch.cat([f1.descriptors, f0.descriptors[:10]]), f1.image_size)
              for f0, f1 in zip(batch0, batch1)]
    batched = superglue.match(batch0, batch1)
    assert len(batched) == len(counts)
    for f0, f1, together in zip(batch0, batch1, batched):
        alone = superglue.match(f0, f1)
        assert_well_formed(together, len(f0), len(f1))
        assert torch.equal(together.matches0, alone.matches0)
        assert torch.equal(together.matches1, alone.matches1)
        torch.testing.assert_close(together.matching_scores0, alone.matching_scores0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(together.log_assignment, alone.log_assignment, rtol=1e-4, atol=1e-4)
    assert sum(r.num_matches for r in batched) > 0


def test_match_rejects_mismatched_inputs(superglue):
    with pytest.raises(ValueError, match="as many"):
        superglue.match([random_features(3)], [])
    with pytest.raises(ValueError, match="dimension"):
        superglue.match(random_features(3, dim=128), random_features(3, dim=128))
    with pytest.raises(TypeError):
        superglue.match(random_features(3), [random_features(3)])


def with_frames(features: Features, seed: int) -> Features:
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    frames = torch.stack([1 + 20 * torch.rand(n, generator=gen), 6.28 * torch.rand(n, generator=gen)], dim=1)
    return Features(features.keypoints, features.scores, features.descriptors, features.image_size, frames)


def test_scale_orientation_model_reads_them_batched_or_alone():
    torch.manual_seed(0)
    superglue = SuperGlue(descriptor_dim=64, keypoint_encoder=[32], GNN_layers=["self", "cross"],
                          sinkhorn_iterations=20, match_threshold=0.0, scale_orientation=True).eval()
    assert superglue.kenc.encoder[0].weight.shape == (32, 6, 1)
    batch0 = [with_frames(random_features(n, seed=n, dim=64), n) for n in (12, 30)]
    batch1 = [with_frames(random_features(m, seed=m, dim=64), m) for m in (25, 7)]
    for f0, f1, together in zip(batch0, batch1, superglue.match(batch0, batch1)):
        torch.testing.assert_close(together.log_assignment, superglue.match(f0, f1).log_assignment,
                                   rtol=1e-4, atol=1e-4)
    turned = with_frames(batch0[0], 99)
    assert not torch.allclose(superglue.match(turned, batch1[0]).log_assignment,
                              superglue.match(batch0[0], batch1[0]).log_assignment)
    with pytest.raises(ValueError, match="scale and orientation"):
        superglue.match(random_features(5, dim=64), batch1[0])
    with pytest.raises(ValueError, match="scale_orientation"):
        Features(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 8), (10, 10), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="scale_orientation"):
        SuperGlue(scale_orientation=1)


def test_superpoint_rejects_bad_image_shapes(superpoint):
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        superpoint.extract(torch.zeros((2, 3, 16, 16)))


@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 2, 8, 6), (1, 1, 3, 5)])
def test_strided_max_pool_equals_max_pool2d(shape):
    from superglue_ros.models.superpoint import max_pool_2x2

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(max_pool_2x2(x), torch.nn.functional.max_pool2d(x, kernel_size=2, stride=2))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 480, 640), (2, 1, 123, 251), (1, 1, 202, 168), (1, 1, 70, 90)])
def test_inference_heads_are_the_one_thread_forward_bit_for_bit(superpoint, shape, threads):
    """The oneDNN path extract takes (strips on one-thread workers, fused ReLU, reused buffers) changes no bit
    of either head of the forward run with one thread, at strip-aligned and ragged heights, batched, whatever
    torch's thread count; small maps take the plain path (at the caller's thread count)."""
    from superglue_ros.models import superpoint_onednn

    before = torch.get_num_threads()
    images = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2]))
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one_thread = superpoint(images)
            layers = superpoint_onednn.plan(superpoint, (1, *shape[1:]))
        torch.set_num_threads(threads)
        with torch.no_grad():
            expected = one_thread if layers is not None else superpoint(images)
        with torch.inference_mode():
            for _ in range(2):  # the second call reuses the workspace
                logits, dense = superpoint.heads(images)
                assert torch.equal(logits, expected[0]) and torch.equal(dense, expected[1])
        assert torch.get_num_threads() == threads  # the workers' one thread is theirs alone
    finally:
        torch.set_num_threads(before)
    if shape[2] >= 120:  # the pinned torch runs these through oneDNN: the fast path must really be taken
        assert layers is not None


def test_onednn_workers_leave_the_callers_thread_count(superpoint):
    """The workers run with one thread each, and neither the caller nor a thread started afterwards inherits
    it: a thread's first operation takes torch's default, which the workers must not have changed."""
    import threading

    from superglue_ros.models import superpoint_onednn

    before = torch.get_num_threads()
    count = max(2, before)
    try:
        torch.set_num_threads(count)
        workers = superpoint_onednn.one_thread_workers(count)
        assert {workers.submit(torch.get_num_threads).result() for _ in range(2 * count)} == {1}
        seen = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert torch.get_num_threads() == count and seen == [count]
    finally:
        torch.set_num_threads(before)


def test_onednn_probe_accepts_the_pinned_torch():
    """CI's torch has the internal operators: the probe must say so, or the fast path silently disappears."""
    from superglue_ros.models import superpoint_onednn

    assert superpoint_onednn.available()


def test_a_torch_without_the_internal_operators_runs_the_plain_forward(superpoint, monkeypatch):
    """What a newer torch whose internals changed gets: the probe fails, the plan is None, extraction still runs
    and gives the same keypoints as before. (At one thread: the plain forward runs at the caller's thread count,
    whose bits are the one-thread workers' only there.)"""
    from superglue_ros.models import superpoint_onednn

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    image = torch.rand(240, 320, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        fast = superpoint.extract(image)

    def changed_signature(*args, **kwargs):
        raise TypeError("_convolution_pointwise(): incompatible function arguments")

    monkeypatch.setattr(superpoint_onednn, "fused_conv", changed_signature)
    superpoint_onednn.available.cache_clear()
    monkeypatch.setattr(superpoint_onednn, "_PLANS", {})
    try:
        assert not superpoint_onednn.available()
        assert superpoint_onednn.plan(superpoint, (1, 1, 240, 320)) is None
        with torch.inference_mode():
            plain = superpoint.extract(image)
    finally:
        superpoint_onednn.available.cache_clear()
        torch.set_num_threads(before)
    assert torch.equal(plain.keypoints, fast.keypoints) and torch.equal(plain.descriptors, fast.descriptors)


def direct_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The reference's NMS written with max_pool2d's square window."""
    def pool(x):
        return torch.nn.functional.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    is_max = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(is_max.float()) > 0
        remaining = torch.where(suppressed, zeros, scores)
        is_max = is_max | ((remaining == pool(remaining)) & ~suppressed)
    return torch.where(is_max, scores, zeros)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_equals_the_square_window_with_ties(radius, seed):
    """Scores on a coarse grid of values, so that plateaus and ties (what decides NMS) are everywhere."""
    from superglue_ros.models.superpoint import max_pool_nms

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (2, 37, 53), generator=gen).float() / 5
    assert torch.equal(max_pool_nms(scores, radius), direct_nms(scores, radius))


@pytest.mark.parametrize("border", [0, 4, 20, 40])
@pytest.mark.parametrize("budget", [-1, 0, 7, 10000])
def test_keypoint_selection_order_and_borders(border, budget):
    from superglue_ros.models.superpoint import select_keypoints

    heat = torch.rand((50, 70), generator=torch.Generator().manual_seed(3))
    keypoints, scores = select_keypoints(heat, 0.6, border, budget)
    yx = torch.nonzero(heat > 0.6)
    yx = yx[(yx[:, 0] >= border) & (yx[:, 0] < 50 - border) & (yx[:, 1] >= border) & (yx[:, 1] < 70 - border)]
    expected = heat[yx[:, 0], yx[:, 1]]
    if 0 <= budget < len(expected):
        expected, order = torch.topk(expected, budget)
        yx = yx[order]
    assert torch.equal(scores, expected) and torch.equal(keypoints, yx.flip(1).float())


def official_gnn(gnn, desc0: torch.Tensor, desc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's channel-first formulation, written out: separate Q/K/V and merge
    projections, dim-major heads (view(B, D/h, h, N)), and the MLP as stored. The MLP sees
    both images in one call, so training-mode BatchNorm takes statistics over both, as
    this package trains."""
    def message(layer, x, source):
        b, dim, _ = x.shape
        heads = layer.attn.num_heads
        q, k, v = (conv(t).view(b, dim // heads, heads, -1)
                   for conv, t in zip(layer.attn.proj, (x, source, source)))
        prob = torch.softmax(torch.einsum("bdhn,bdhm->bhnm", q, k) / (dim // heads) ** 0.5, dim=-1)
        return layer.attn.merge(torch.einsum("bhnm,bdhm->bdhn", prob, v).reshape(b, dim, -1))

    x0, x1 = desc0.transpose(1, 2), desc1.transpose(1, 2)
    for layer, kind in zip(gnn.layers, gnn.kinds):
        src0, src1 = (x1, x0) if kind == "cross" else (x0, x1)
        inputs = [torch.cat([x, message(layer, x, src)], dim=1) for x, src in ((x0, src0), (x1, src1))]
        delta0, delta1 = layer.mlp(torch.cat(inputs, dim=2)).split([x0.shape[2], x1.shape[2]], dim=2)
        x0, x1 = x0 + delta0, x1 + delta1
    return x0.transpose(1, 2), x1.transpose(1, 2)


@pytest.mark.parametrize("training", [False, True])
def test_gnn_equals_the_official_formulation(training):
    """Folded merge/BatchNorm and head-major views compute the official layer, with and
    without gradients (the no-gradient path caches its derived weights)."""
    from superglue_ros.models.attention import AttentionalGNN

    torch.manual_seed(0)
    gnn = AttentionalGNN(64, ["self", "cross"], num_heads=4)
    for layer in gnn.layers:
        bn = layer.mlp[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    gnn.train(training)
    desc0, desc1 = torch.randn(2, 30, 64), torch.randn(2, 20, 64)
    expected = official_gnn(gnn, desc0, desc1)
    got = gnn(desc0, desc1)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    if not training:
        with torch.inference_mode():
            for e, g in zip(expected, gnn(desc0, desc1)):
                torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_cached_layer_weights_follow_new_weights():
    """Loading other weights into a model that already matched must give the new model's result."""
    f0, f1 = random_features(40, seed=3), random_features(35, seed=4)
    model = SuperGlue(sinkhorn_iterations=10).eval()
    model.load_state_dict(rule_weights(model))
    before = model.match(f0, f1).log_assignment
    other = SuperGlue(sinkhorn_iterations=10).eval()
    model.load_state_dict(other.state_dict())
    after = model.match(f0, f1).log_assignment
    assert not torch.allclose(before, after)
    assert torch.equal(after, other.match(f0, f1).log_assignment)
