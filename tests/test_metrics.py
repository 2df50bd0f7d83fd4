import math

import numpy as np
import pytest
import torch

from racecomp import metrics

# ---------------------------------------------------------------------------------------------------------
# Plain per-image reference of the BasicSR / MATLAB convention, written independently of racecomp.metrics:
# explicit loops over images and channels, numpy sliding windows, float64 throughout.


def reference_gaussian(size=11, sigma=1.5):
    taps = np.array([math.exp(-((i - size // 2) ** 2) / (2 * sigma * sigma)) for i in range(size)])
    taps /= taps.sum()
    return np.outer(taps, taps)


def reference_ssim_channel(x, y, peak=255.0):
    """SSIM of two 2-D float64 arrays: Gaussian-weighted stats in every fully-inside 11x11 window, mean of the map."""
    window = reference_gaussian()
    patches_x = np.lib.stride_tricks.sliding_window_view(x, (11, 11))  # (H-10, W-10, 11, 11)
    patches_y = np.lib.stride_tricks.sliding_window_view(y, (11, 11))
    mu_x = np.einsum("ijkl,kl->ij", patches_x, window)
    mu_y = np.einsum("ijkl,kl->ij", patches_y, window)
    var_x = np.einsum("ijkl,kl->ij", (patches_x - mu_x[..., None, None]) ** 2, window)
    var_y = np.einsum("ijkl,kl->ij", (patches_y - mu_y[..., None, None]) ** 2, window)
    cov = np.einsum("ijkl,kl->ij", (patches_x - mu_x[..., None, None]) * (patches_y - mu_y[..., None, None]), window)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def reference_psnr(x, y):
    mse = np.mean((x - y) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def reference_quality(sr_image, hr_image, border):
    """One (3, H, W) float64 image pair in [0, 1] -> dict of the four numbers, BasicSR style."""
    results = {}
    levels = []
    for image in (sr_image, hr_image):
        grid = np.round(np.clip(image, 0, 1) * 255.0)
        if border:
            grid = grid[:, border:-border, border:-border]
        levels.append(grid)
    sr_levels, hr_levels = levels
    y_sr = 16.0 + (65.481 * sr_levels[0] + 128.553 * sr_levels[1] + 24.966 * sr_levels[2]) / 255.0
    y_hr = 16.0 + (65.481 * hr_levels[0] + 128.553 * hr_levels[1] + 24.966 * hr_levels[2]) / 255.0
    results["psnr_y"] = reference_psnr(y_sr, y_hr)
    results["ssim_y"] = reference_ssim_channel(y_sr, y_hr)
    results["psnr_rgb"] = reference_psnr(sr_levels, hr_levels)
    results["ssim_rgb"] = np.mean([reference_ssim_channel(sr_levels[c], hr_levels[c]) for c in range(3)])
    return results


def global_ssim(x, y, peak=255.0):
    """The unwindowed SSIM formula on whole-image statistics (what image_quality must NOT compute)."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = x.mean(), y.mean()
    cov = ((x - mu_x) * (y - mu_y)).mean()
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (x.var() + y.var() + c2))


def on_grid(generator, shape, low=0, high=256):
    """Random images already on the uint8 grid, as floats in [0, 1]."""
    return torch.randint(low, high, shape, generator=generator).double() / 255.0


# ---------------------------------------------------------------------------------------------------------
# Image quality


@pytest.mark.parametrize("height, width, scale", [(32, 32, 2), (37, 45, 4), (31, 24, 2), (40, 33, 0)])
def test_image_quality_matches_reference_per_image(height, width, scale):
    generator = torch.Generator().manual_seed(height * width + scale)
    hr = torch.rand(3, 3, height, width, generator=generator, dtype=torch.float64)
    noise = 0.05 * torch.randn(3, 3, height, width, generator=generator, dtype=torch.float64)
    sr = hr + noise * torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64).view(3, 1, 1, 1)  # differs by image
    sr[0, 0, :4, :4] = 1.3  # out of range: exercises the clamp
    result = metrics.image_quality(sr.float(), hr.float(), scale)
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
        assert result[key].shape == (3,) and result[key].dtype == torch.float64
    for index in range(3):
        expected = reference_quality(sr[index].float().double().numpy(), hr[index].float().double().numpy(), scale)
        for key, value in expected.items():
            assert result[key][index].item() == pytest.approx(value, abs=1e-6), (key, index)
    assert result["psnr_rgb"][0] > result["psnr_rgb"][1] > result["psnr_rgb"][2]  # own value per image


def test_identical_images_in_a_batch_keep_their_own_inf_and_one():
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 32, 32, generator=generator)
    sr = hr.clone()
    sr[2] = (sr[2] + 0.1 * torch.randn(3, 32, 32, generator=generator)).clamp(0, 1)
    result = metrics.image_quality(sr, hr, scale=2)
    for index in (0, 1, 3):
        assert math.isinf(result["psnr_y"][index].item()) and math.isinf(result["psnr_rgb"][index].item())
        assert result["ssim_y"][index].item() == pytest.approx(1.0, abs=1e-12)
        assert result["ssim_rgb"][index].item() == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(result["psnr_rgb"][2].item()) and result["ssim_rgb"][2].item() < 0.99


@pytest.mark.parametrize("levels", [1, 3, 10])
def test_constant_offset_gives_exact_psnr(levels):
    generator = torch.Generator().manual_seed(levels)
    hr = on_grid(generator, (2, 3, 32, 32), high=256 - levels)
    sr = hr + levels / 255.0
    result = metrics.image_quality(sr, hr, scale=2)
    expected_rgb = 20 * math.log10(255.0 / levels)
    expected_y = 20 * math.log10(255.0 / (levels * 219.0 / 255.0))  # Y weights sum to 219 (range 16-235)
    assert result["psnr_rgb"].tolist() == pytest.approx([expected_rgb] * 2, abs=1e-9)
    assert result["psnr_y"].tolist() == pytest.approx([expected_y] * 2, abs=1e-9)


def test_rounding_to_uint8_grid_is_part_of_the_convention():
    generator = torch.Generator().manual_seed(1)
    hr = on_grid(generator, (1, 3, 24, 24), low=1, high=255)
    below_half_level = metrics.image_quality(hr + 0.4 / 255, hr, scale=0)
    assert math.isinf(below_half_level["psnr_rgb"].item())  # rounds back onto hr's grid
    assert below_half_level["ssim_rgb"].item() == pytest.approx(1.0, abs=1e-12)
    above_half_level = metrics.image_quality(hr + 0.6 / 255, hr, scale=0)
    assert above_half_level["psnr_rgb"].item() == pytest.approx(20 * math.log10(255.0), abs=1e-9)
    clamped = metrics.image_quality(torch.full((1, 3, 16, 16), 1.7), torch.ones(1, 3, 16, 16), scale=0)
    assert math.isinf(clamped["psnr_y"].item())


def test_border_crop_removes_scale_pixels_each_side():
    hr = torch.full((1, 3, 32, 32), 0.5)
    sr = hr.clone()
    sr[..., :4, :] = 0.0  # damage only the top 4 rows
    assert math.isinf(metrics.image_quality(sr, hr, scale=4)["psnr_rgb"].item())
    assert math.isfinite(metrics.image_quality(sr, hr, scale=3)["psnr_rgb"].item())


def test_ssim_is_windowed_not_global():
    # A steep ramp plus noise: globally the ramp dominates (high correlation), but inside each 11x11 window
    # the noise dominates, so the windowed SSIM is much lower.
    generator = np.random.default_rng(3)
    ramp = np.tile(np.linspace(0, 255, 48), (48, 1))
    hr = ramp
    sr = np.clip(ramp + generator.normal(0, 12, ramp.shape), 0, 255)
    windowed = metrics.ssim(torch.from_numpy(sr)[None, None], torch.from_numpy(hr)[None, None], data_range=255.0)
    assert windowed.item() == pytest.approx(reference_ssim_channel(sr, hr), abs=1e-9)
    assert global_ssim(sr, hr) > 0.98  # 0.989
    assert windowed.item() < 0.65  # 0.597


def test_ssim_of_offset_halves_matches_local_luminance_formula():
    # y = x + d everywhere: every window has var_x = var_y = cov, so SSIM = luminance term of the local
    # means alone, which for a two-level image depends only on the weight the window puts on the right half.
    low, high, offset, width = 20.0, 220.0, 30.0, 30
    x = np.full((11, width), low)
    x[:, width // 2:] = high
    y = x + offset
    taps = reference_gaussian()[5] / reference_gaussian()[5].sum()  # 1-D normalized Gaussian
    c1 = (0.01 * 255) ** 2
    expected = []
    for start in range(width - 10):
        columns = np.arange(start, start + 11)
        right_weight = taps[columns >= width // 2].sum()
        mu = low + (high - low) * right_weight
        expected.append((2 * mu * (mu + offset) + c1) / (mu**2 + (mu + offset) ** 2 + c1))
    result = metrics.ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], data_range=255.0)
    assert result.item() == pytest.approx(np.mean(expected), abs=1e-9)
    assert abs(result.item() - global_ssim(x, y)) > 0.01


def test_ssim_cross_check_with_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    generator = np.random.default_rng(4)
    x = generator.integers(0, 256, (40, 40)).astype(np.float64)
    y = np.clip(x + generator.normal(0, 20, x.shape), 0, 255)
    full_map = skimage_metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=255, full=True)[1]
    expected = full_map[5:-5, 5:-5].mean()  # skimage pads; the valid region is the convention here
    result = metrics.ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], data_range=255.0)
    assert result.item() == pytest.approx(expected, abs=1e-6)


def test_ssim_training_form_is_differentiable_in_input_dtype():
    generator = torch.Generator().manual_seed(5)
    hr = torch.rand(2, 3, 20, 20, generator=generator)
    sr = (hr + 0.05 * torch.randn(2, 3, 20, 20, generator=generator)).requires_grad_()
    value = metrics.ssim(sr, hr, data_range=1.0)
    assert value.shape == (2,) and value.dtype == torch.float32
    (1 - value).mean().backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all()
    # Scale-free: [0, 1] images with data_range 1 equal the same images in grey levels with data_range 255.
    as_levels = metrics.ssim(sr.detach().double() * 255, hr.double() * 255, data_range=255.0)
    assert value.detach().double().tolist() == pytest.approx(as_levels.tolist(), abs=1e-5)
    assert metrics.ssim(hr, hr).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_ssim_keeps_float32_precision_for_half_inputs_and_under_autocast():
    generator = torch.Generator().manual_seed(6)
    hr = torch.rand(1, 3, 24, 24, generator=generator)
    sr = (hr + 0.02 * torch.randn(1, 3, 24, 24, generator=generator)).clamp(0, 1)
    reference = metrics.ssim(sr.double(), hr.double())
    half_inputs = metrics.ssim(sr.bfloat16(), hr.bfloat16())
    assert half_inputs.dtype == torch.float32
    expected = metrics.ssim(sr.bfloat16().double(), hr.bfloat16().double())
    assert half_inputs.item() == pytest.approx(expected.item(), abs=1e-5)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = metrics.ssim(sr, hr)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference.item(), abs=1e-5)


@pytest.mark.parametrize("level", [0.5, 0.92])  # mid-grey and near-white faces: float32 cancels most near white
def test_float32_ssim_of_the_gpu_path_stays_within_1e_6_of_float64(level):
    generator = torch.Generator().manual_seed(3)
    texture = torch.nn.functional.interpolate(torch.rand(4, 3, 6, 6, generator=generator), size=(40, 40),
                                              mode="bicubic")
    hr = (level + 0.1 * (texture - 0.5)).clamp(0, 1)
    sr = (hr + 0.01 * torch.randn(hr.shape, generator=generator)).clamp(0, 1)
    reference = metrics.image_quality(sr, hr, 2)  # the CPU default: float64
    fast = metrics.image_quality(sr, hr, 2, ssim_dtype=torch.float32)  # what a GPU computes
    for key in ("psnr_y", "psnr_rgb"):
        assert torch.equal(fast[key], reference[key])  # float64 either way
    for key in ("ssim_y", "ssim_rgb"):
        assert fast[key].dtype == torch.float64
        assert (fast[key] - reference[key]).abs().max() < 1e-6, key


def test_gaussian_window_is_normalized_and_matches_opencv_taps():
    window = metrics.gaussian_window(11, 1.5, dtype=torch.float64)
    assert window.shape == (11, 11)
    assert window.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert window.numpy() == pytest.approx(reference_gaussian(), abs=1e-15)
    with pytest.raises(ValueError, match="odd"):
        metrics.gaussian_window(10, 1.5)


def test_image_quality_rejects_bad_inputs():
    good = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="same shape"):
        metrics.image_quality(good, torch.rand(1, 3, 32, 30), 2)
    with pytest.raises(ValueError, match="RGB"):
        metrics.image_quality(good[:, :1], good[:, :1], 2)
    with pytest.raises(ValueError, match="SSIM window"):
        metrics.image_quality(good, good, 11)
    with pytest.raises(ValueError, match="NaN"):
        metrics.image_quality(torch.full_like(good, float("nan")), good, 2)
    for chunk in (0, 1.5, True):
        with pytest.raises(ValueError, match="chunk"):
            metrics.image_quality(good, good, 2, chunk=chunk)


# ---------------------------------------------------------------------------------------------------------
# Verification


def test_pair_scores_are_cosines_of_normalized_embeddings():
    emb_a = np.array([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0]])
    emb_b = np.array([[6.0, 8.0], [0.0, 5.0], [-1.0, -1.0]])
    assert metrics.pair_scores(emb_a, emb_b) == pytest.approx([1.0, 0.0, -1.0])
    assert np.linalg.norm(metrics.l2_normalize(emb_a), axis=1) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="zero"):
        metrics.l2_normalize(np.zeros((1, 3)))


# insightface's 10-fold accuracy (recognition/arcface_torch/eval/verification.py: `calculate_roc`, `calculate_accuracy`,
# sklearn `KFold(n_splits, shuffle=False)`), re-implemented literally here from a reading of that code, loops and
# all, independently of racecomp.metrics: the threshold grid np.arange(0, 4, 0.01) on squared L2 distance,
# "same" when dist < threshold, the first maximum of the training accuracy (np.argmax).

INSIGHTFACE_GRID = np.arange(0, 4, 0.01)


def insightface_calculate_roc(dist, issame, nrof_folds=10):
    """(best threshold per fold, accuracy per fold, per-pair 0/1 correctness) as insightface computes them."""
    issame = np.asarray(issame, dtype=bool)
    nrof_pairs = len(issame)
    fold_sizes = np.full(nrof_folds, nrof_pairs // nrof_folds, dtype=int)  # sklearn KFold, shuffle=False
    fold_sizes[: nrof_pairs % nrof_folds] += 1
    starts = np.concatenate([[0], np.cumsum(fold_sizes)])

    def calculate_accuracy(threshold, d, same):
        predict_issame = np.less(d, threshold)
        tp = np.sum(np.logical_and(predict_issame, same))
        tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(same)))
        return float(tp + tn) / d.size

    indices = np.arange(nrof_pairs)
    best = np.zeros(nrof_folds)
    accuracy = np.zeros(nrof_folds)
    correct = np.zeros(nrof_pairs, dtype=int)
    for fold_idx in range(nrof_folds):
        test_set = indices[starts[fold_idx]:starts[fold_idx + 1]]
        train_set = np.setdiff1d(indices, test_set)
        acc_train = np.zeros(len(INSIGHTFACE_GRID))
        for threshold_idx, threshold in enumerate(INSIGHTFACE_GRID):
            acc_train[threshold_idx] = calculate_accuracy(threshold, dist[train_set], issame[train_set])
        best[fold_idx] = INSIGHTFACE_GRID[np.argmax(acc_train)]
        accuracy[fold_idx] = calculate_accuracy(best[fold_idx], dist[test_set], issame[test_set])
        correct[test_set] = np.less(dist[test_set], best[fold_idx]) == issame[test_set]
    return best, accuracy, correct


def rfw_layout(n_folds=10, per_half=300):
    """Labels and fold ids in RFW's pair-file order: each fold is per_half genuine lines, then per_half impostor."""
    labels = np.tile(np.repeat([1, 0], per_half), n_folds)
    return labels, np.repeat(np.arange(n_folds), 2 * per_half)


def rfw_like_embeddings(generator, labels, dim=32, noise=1.1):
    """Paired embeddings: a genuine pair shares an identity vector plus noise, an impostor pair does not."""
    first_id = generator.normal(size=(len(labels), dim))
    second_id = np.where(labels[:, None] == 1, first_id, generator.normal(size=(len(labels), dim)))
    return (first_id + noise * generator.normal(size=first_id.shape),
            second_id + noise * generator.normal(size=first_id.shape))


def assert_matches_insightface(result, dist, labels, nrof_folds=10):
    best, accuracy, correct = insightface_calculate_roc(dist, labels, nrof_folds)
    assert result["correct"].tolist() == correct.tolist()
    assert result["fold_accuracies"].tolist() == accuracy.tolist()
    assert result["thresholds"].tolist() == best.tolist()  # on insightface's distance grid, bit for bit
    assert result["accuracy"] == np.mean(accuracy) and result["accuracy_std"] == np.std(accuracy)


def test_kfold_matches_insightface_on_continuous_scores_from_embeddings():
    generator = np.random.default_rng(20)
    labels, fold_ids = rfw_layout()  # 6000 pairs, 10 RFW folds of 300 + 300 lines
    emb_a, emb_b = rfw_like_embeddings(generator, labels)
    # insightface: L2-normalize (sklearn.preprocessing.normalize), squared L2 distance of each pair.
    unit_a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    unit_b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
    dist = np.sum(np.square(unit_a - unit_b), 1)
    scores = metrics.pair_scores(emb_a, emb_b)
    assert 0.8 < metrics.kfold_accuracy(scores, labels, folds=fold_ids)["accuracy"] < 0.97  # overlapping classes
    # RFW's own folds and KFold(10, shuffle=False) on the pair order are the same split here.
    assert_matches_insightface(metrics.kfold_accuracy(scores, labels, folds=fold_ids), dist, labels)
    assert_matches_insightface(metrics.kfold_accuracy(scores, labels, folds=10), dist, labels)


@pytest.mark.parametrize("seed, step, per_half", [(21, None, 300), (22, 0.005, 300), (23, 0.05, 300), (26, 0.05, 5),
                                                   (27, 0.1, 3)])
def test_kfold_matches_insightface_on_rfw_like_scores(seed, step, per_half):
    # step: scores rounded to multiples of it (then every distance 2 - 2s sits on a grid threshold, where the
    # strict < decides, and whole ranges of thresholds tie, where the argmax tie-break decides). Small folds
    # (per_half genuine + per_half impostor lines) make tied training accuracies common.
    generator = np.random.default_rng(seed)
    labels, fold_ids = rfw_layout(per_half=per_half)
    scores = np.where(labels == 1, generator.normal(0.4, 0.2, len(labels)), generator.normal(0.1, 0.15, len(labels)))
    scores = np.clip(scores, -1.0, 1.0)
    if step is not None:
        scores = np.round(scores / step) * step
    dist = 2.0 - 2.0 * scores  # squared L2 distance of unit vectors with cosine s
    assert_matches_insightface(metrics.kfold_accuracy(scores, labels, folds=fold_ids), dist, labels)
    # KFold on a pair count that 10 does not divide, in shuffled order: the first n % 10 folds get one more.
    order = generator.permutation(len(labels))[:-2]
    assert_matches_insightface(metrics.kfold_accuracy(scores[order], labels[order], folds=10), dist[order],
                               labels[order])


def test_tie_break_takes_the_first_best_distance_threshold_hand_computed():
    # Distances 2 - 2s: impostor .101 -> 1.798, genuine .201 -> 1.598, impostor .301 -> 1.398, genuine .401 ->
    # 1.198. "Same" when dist < t: t in (1.198, 1.398] and t in (1.598, 1.798] both get 3 of 4 right.
    # insightface's argmax over ascending t takes the first, t = 1.20 (cosine 0.4): the strictest threshold.
    # The old search took the lowest cosine midpoint, 0.151, i.e. the other tied range.
    threshold, accuracy = metrics.best_threshold([0.101, 0.201, 0.301, 0.401], [0, 1, 0, 1])
    assert threshold == INSIGHTFACE_GRID[120] and accuracy == 0.75
    # Two folds; fold 1 = (genuine .251 -> 1.498, impostor .051 -> 1.898).
    #   fold 1 held out: trained on fold 0 -> t = 1.20; genuine 1.498 rejected (wrong), impostor right -> 1/2
    #     (the old cosine 0.151 accepted the genuine: 2/2).
    #   fold 0 held out: trained on fold 1 -> t in (1.498, 1.898], first t = 1.50; accepts .401 (right) and
    #     .301 (wrong), rejects .201 (wrong) and .101 (right) -> 2/4 (the old midpoint 0.151: 3/4).
    scores = [0.101, 0.201, 0.301, 0.401, 0.251, 0.051]
    labels = [0, 1, 0, 1, 1, 0]
    result = metrics.kfold_accuracy(scores, labels, folds=np.array([0, 0, 0, 0, 1, 1]))
    assert result["correct"].tolist() == [1, 0, 0, 1, 0, 1]
    assert result["fold_accuracies"].tolist() == [0.5, 0.5]
    assert result["thresholds"].tolist() == [INSIGHTFACE_GRID[150], INSIGHTFACE_GRID[120]]


def test_midpoints_search_breaks_ties_toward_the_highest_cosine():
    # Updated: this test used to pin the LOWEST tied cosine (0.15), described as "insightface's argmax over
    # ascending thresholds"; but insightface's thresholds ascend in distance 2 - 2s, i.e. descend in cosine, so
    # its first best is the highest cosine. The midpoints option now breaks ties in that same direction.
    # Candidates -inf, .15, .25, .35, +inf give accuracies 2/4, 3/4, 2/4, 3/4, 2/4.
    threshold, accuracy = metrics.best_threshold([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], search="midpoints")
    assert threshold == pytest.approx(0.35) and accuracy == 0.75
    threshold, accuracy = metrics.best_threshold([0.9, 0.8, 0.1], [1, 1, 1], search="midpoints")
    assert threshold == -np.inf and accuracy == 1.0
    assert metrics.predicted_genuine([0.4, 0.35, 0.3], 0.35, search="midpoints").tolist() == [True, False, False]


def test_insightface_grid_edges():
    # The grid stops at 3.99: cosines <= -0.995 (distance >= 3.99) are never accepted, even when all pairs are
    # genuine; the midpoints search can accept all.
    assert metrics.best_threshold([-0.999, -0.9999], [1, 1]) == (0.0, 0.0)  # all tie at 0/2: the first, 0.0
    assert metrics.best_threshold([-0.999, -0.9999], [1, 1], search="midpoints") == (-np.inf, 1.0)
    # A cosine rounded just above 1 is distance 0, not negative: threshold 0.0 accepts nothing, 0.01 accepts it.
    assert metrics.cosine_to_distance([1.0000000000000002, 0.5]).tolist() == [0.0, 1.0]
    assert metrics.predicted_genuine([1.0000000000000002], 0.0).tolist() == [False]
    assert metrics.best_threshold([1.0000000000000002, 0.2], [1, 0]) == (INSIGHTFACE_GRID[1], 1.0)
    with pytest.raises(ValueError, match="threshold search"):
        metrics.kfold_accuracy([0.1, 0.2], [0, 1], folds=2, search="exact")


def test_perfectly_separable_scores():
    generator = np.random.default_rng(7)
    scores = np.concatenate([generator.uniform(0.6, 0.9, 50), generator.uniform(-0.2, 0.3, 50)])
    labels = np.array([1] * 50 + [0] * 50)
    order = generator.permutation(100)
    result = metrics.kfold_accuracy(scores[order], labels[order], folds=10)
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0
    assert result["correct"].tolist() == [1] * 100
    assert metrics.tar_at_far(scores, labels, 0.0) == 1.0
    assert metrics.tar_at_far(scores, labels, 1e-3) == 1.0


def test_kfold_accuracy_hand_computed():
    # 10 folds of 2 pairs: (genuine, impostor). Genuine .801 except fold 0 (.101); impostor .201 except fold 3
    # (.601) and fold 9 (.901). Distances 2 - 2s: .801 -> .398, .101 -> 1.798, .201 -> 1.598, .601 -> .798,
    # .901 -> .198 (none on the 0.01 grid). Worked out by hand, "same" when distance < t:
    #   fold 0 out: t in (.398, .798] right on 17/18, first t = .40; held out: genuine .101 rejected -> 1/2
    #   fold 3 out: t in (.398, 1.598] all right on 16/18, first t = .40; held out: both right -> 1
    #     (this is where the tie-break decides: the old lowest-cosine midpoint, .501, accepted the .601 impostor)
    #   fold 9 out: t in (.398, .798] right on 17/18, t = .40; held out: impostor .901 accepted -> 1/2
    #   other folds: t in (.398, .798] 16/18 beats (.798, 1.598] 15/18, t = .40; held out both right -> 1
    genuine = [0.101] + [0.801] * 9
    impostor = [0.201] * 10
    impostor[3], impostor[9] = 0.601, 0.901
    scores = [score for pair in zip(genuine, impostor) for score in pair]
    labels = [1, 0] * 10
    result = metrics.kfold_accuracy(scores, labels, folds=10)
    assert result["thresholds"].tolist() == [INSIGHTFACE_GRID[40]] * 10
    assert result["fold_accuracies"].tolist() == [0.5] + [1.0] * 8 + [0.5]
    assert result["accuracy"] == pytest.approx(0.9)
    assert result["accuracy_std"] == pytest.approx(0.2)  # ddof=0: sqrt((2 * .4^2 + 8 * .1^2) / 10)
    expected_correct = [1] * 20
    expected_correct[0] = 0  # fold 0 genuine
    expected_correct[19] = 0  # fold 9 impostor
    assert result["correct"].tolist() == expected_correct
    assert_matches_insightface(result, 2.0 - 2.0 * np.array(scores), labels)
    # The same folds given as explicit fold ids, with the pairs shuffled, give the same answer.
    order = np.random.default_rng(0).permutation(20)
    fold_ids = np.repeat(np.arange(10), 2)[order]
    by_id = metrics.kfold_accuracy(np.array(scores)[order], np.array(labels)[order], folds=fold_ids)
    assert by_id["thresholds"].tolist() == result["thresholds"].tolist()
    assert by_id["accuracy"] == pytest.approx(0.9)
    assert by_id["correct"].tolist() == np.array(expected_correct)[order].tolist()


def test_kfold_accuracy_midpoints_search_hand_computed():
    # The exact-optimum search (search="midpoints", not insightface): candidates are midpoints of the cosines.
    # 10 folds of 2 pairs: (genuine, impostor). Genuine 0.8 except fold 0 (0.1); impostor 0.2 except fold 3
    # (0.6) and fold 9 (0.9). Worked out by hand over the candidate midpoints of each training set:
    #   fold 0 out: train {.2,.6,.8,.9}: t=.7 right on 17/18; held out: genuine .1 rejected -> 1/2
    #   fold 3 out: train {.1,.2,.8,.9}: t=.5 right on 16/18; held out: impostor .6 accepted -> 1/2
    #   fold 9 out: train {.1,.2,.6,.8}: t=.7 right on 17/18; held out: impostor .9 accepted -> 1/2
    #   other folds: train {.1,.2,.6,.8,.9}: t=.7 (16/18) beats .5 (15/18); held out both right -> 1
    genuine = [0.1] + [0.8] * 9
    impostor = [0.2] * 10
    impostor[3], impostor[9] = 0.6, 0.9
    scores = [score for pair in zip(genuine, impostor) for score in pair]
    labels = [1, 0] * 10
    result = metrics.kfold_accuracy(scores, labels, folds=10, search="midpoints")
    assert result["thresholds"] == pytest.approx([0.7, 0.7, 0.7, 0.5, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7])
    assert result["fold_accuracies"] == pytest.approx([0.5, 1, 1, 0.5, 1, 1, 1, 1, 1, 0.5])
    assert result["accuracy"] == pytest.approx(0.85)
    assert result["accuracy_std"] == pytest.approx(math.sqrt(0.0525))  # ddof=0: (3*.35^2 + 7*.15^2) / 10
    expected_correct = [1] * 20
    expected_correct[0] = 0  # fold 0 genuine
    expected_correct[7] = 0  # fold 3 impostor
    expected_correct[19] = 0  # fold 9 impostor
    assert result["correct"].tolist() == expected_correct
    # The same folds given as explicit fold ids, with the pairs shuffled, give the same answer.
    order = np.random.default_rng(0).permutation(20)
    fold_ids = np.repeat(np.arange(10), 2)[order]
    by_id = metrics.kfold_accuracy(np.array(scores)[order], np.array(labels)[order], folds=fold_ids,
                                   search="midpoints")
    assert by_id["thresholds"] == pytest.approx(result["thresholds"])
    assert by_id["accuracy"] == pytest.approx(0.85)
    assert by_id["correct"].tolist() == np.array(expected_correct)[order].tolist()


def test_kfold_uses_contiguous_folds_of_nearly_equal_size():
    generator = np.random.default_rng(10)
    scores = generator.normal(0, 1, 23)
    labels = (scores + generator.normal(0, 1, 23) > 0).astype(int)
    result = metrics.kfold_accuracy(scores, labels, folds=10)
    # sklearn KFold / np.array_split: the first 23 % 10 = 3 folds get one extra pair.
    explicit = metrics.kfold_accuracy(scores, labels, folds=np.repeat(np.arange(10), [3, 3, 3] + [2] * 7))
    assert result["thresholds"].tolist() == explicit["thresholds"].tolist()
    assert result["fold_accuracies"].tolist() == explicit["fold_accuracies"].tolist()
    assert result["correct"].tolist() == explicit["correct"].tolist()
    with pytest.raises(ValueError, match="folds"):
        metrics.kfold_accuracy(scores[:5], labels[:5], folds=10)
    with pytest.raises(ValueError, match="one fold per pair"):
        metrics.kfold_accuracy(scores, labels, folds=np.zeros(5))


def test_threshold_at_far_hand_case_and_bound():
    impostor = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    scores = np.concatenate([impostor, [0.95, 0.5]])
    labels = np.array([0] * 10 + [1, 1])
    # far 0.2 allows 2 of 10 false accepts: threshold is the 3rd largest impostor score, 0.8.
    assert metrics.threshold_at_far(scores, labels, 0.2) == pytest.approx(0.8)
    assert metrics.tpr_fpr(scores, labels, 0.8) == pytest.approx((0.5, 0.2))
    assert metrics.threshold_at_far(scores, labels, 0.0) == pytest.approx(1.0)
    assert metrics.threshold_at_far(scores, labels, 1.0) == -np.inf
    # 0.29 * 100 is 28.999999999999996 in floating point: 29 false accepts must still be allowed.
    hundred = np.arange(100) / 100.0
    threshold = metrics.threshold_at_far(hundred, np.zeros(100), 0.29)
    assert threshold == pytest.approx(0.70)  # the 30th largest of 0.00 .. 0.99
    assert np.mean(hundred > threshold) == pytest.approx(0.29)
    generator = np.random.default_rng(8)
    scores = np.round(generator.normal(0, 1, 500), 1)  # many ties
    labels = generator.integers(0, 2, 500)
    for far in (0.0, 0.001, 0.01, 0.1, 0.29, 0.5):
        threshold = metrics.threshold_at_far(scores, labels, far)
        assert metrics.tpr_fpr(scores, labels, threshold)[1] <= far
        lower = np.max(scores[scores < threshold], initial=-np.inf)  # next smaller candidate breaks the bound
        assert metrics.tpr_fpr(scores, labels, lower)[1] > far


def test_roc_points_at_unique_thresholds():
    fpr, tpr, thresholds = metrics.roc_points([0.9, 0.5, 0.5, 0.5, 0.1], [1, 1, 0, 0, 0])
    assert thresholds.tolist() == [0.9, 0.5, 0.1, -np.inf]
    assert fpr.tolist() == pytest.approx([0, 0, 2 / 3, 1])
    assert tpr.tolist() == pytest.approx([0, 0.5, 1, 1])


def test_tar_at_far_with_tied_scores_is_order_independent():
    # Genuine .9 .5 .5; impostor .5 .5 .1 .1. ROC: (0,0) (0,1/3) (1/2,1) (1,1): the tied block at .5 is one
    # diagonal segment, so TAR at FAR .25 is 1/3 + (.25/.5)(2/3) = 2/3 whatever the order of the ties.
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    generator = np.random.default_rng(9)
    for _ in range(5):
        order = generator.permutation(len(scores))
        assert metrics.tar_at_far(scores[order], labels[order], 0.25) == pytest.approx(2 / 3)
        assert metrics.tar_at_far(scores[order], labels[order], 0.0) == pytest.approx(1 / 3)
        assert metrics.tar_at_far(scores[order], labels[order], 0.5) == pytest.approx(1.0)


def test_tar_at_far_takes_top_of_vertical_run_then_interpolates():
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): at FAR .25 the curve is flat at .5 (not .75).
    scores = [0.9, 0.7, 0.6, 0.4, 0.2]
    labels = [1, 0, 1, 0, 0]
    fpr, tpr, _ = metrics.roc_points(scores, labels)
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert tpr.tolist() == pytest.approx([0, 0.5, 0.5, 1, 1, 1])
    assert metrics.tar_at_far(scores, labels, 1 / 6) == pytest.approx(0.5)
    assert metrics.tar_at_far(scores, labels, 1 / 3) == pytest.approx(1.0)


def test_verification_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        metrics.best_threshold([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="impostor"):
        metrics.roc_points([0.1, 0.2], [1, 1])


def test_cpu_values_do_not_depend_on_the_batch_and_match_the_whole_batch_path():
    # On the CPU each image is computed alone (metrics.image_quality's chunk): an image's values are the
    # same bits in any batch; the whole-batch path sums in another order, equal to float64 rounding.
    generator = torch.Generator().manual_seed(7)
    hr = torch.randint(0, 256, (5, 3, 24, 24), generator=generator).float() / 255.0
    sr = hr + 0.05 * torch.randn(hr.shape, generator=generator)
    batch = metrics.image_quality(sr, hr, 2)
    whole = metrics.image_quality(sr, hr, 2, chunk=5)
    for i in range(5):
        alone = metrics.image_quality(sr[i:i + 1], hr[i:i + 1], 2)
        assert all(batch[key][i].item() == alone[key].item() for key in batch)
    assert all(torch.allclose(batch[key], whole[key], rtol=0, atol=1e-12) for key in batch)
    assert all(batch[key].shape == (5,) and batch[key].dtype == torch.float64 for key in batch)
