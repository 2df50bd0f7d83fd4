"""Image-quality and face-verification metrics: pure functions, one pinned convention for every table.

Image quality follows BasicSR's `calculate_psnr` / `calculate_ssim` (the MATLAB-compatible convention of
the super-resolution literature): images on the uint8 grid, a border of `scale` pixels cropped, Y channel
from MATLAB's `rgb2ycbcr` (BT.601, range 16-235, not rounded), PSNR with peak 255, SSIM with an 11x11
Gaussian window (sigma 1.5) over the valid region. Every image gets its own value; batching never mixes
images. Torch, vectorized over the batch, on whatever device the tensors are on.

Verification scores are cosine similarities (higher = more alike); labels 1 genuine, 0 impostor; numpy,
float64. The 10-fold accuracy reproduces insightface's `calculate_roc` (recognition/arcface_torch/eval/
verification.py) exactly: the squared L2 distance of the unit embeddings, 2 - 2 * score, against its grid of
thresholds np.arange(0, 4, 0.01), "same" when distance < threshold, the first best on the training folds
(see `kfold_accuracy`). The FAR-based functions (tpr_fpr, threshold_at_far, roc_points, tar_at_far) work on
the cosine itself and accept a pair when score > threshold.
"""

import math
import numbers

import numpy as np
import torch

# MATLAB rgb2ycbcr luma: Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1] (Y in 16-235).
Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
PEAK_GREY_LEVEL = 255.0


# ---------------------------------------------------------------------------------------------------------
# Image quality (torch)


def _gaussian_taps(size, sigma):
    """Normalized 1-D Gaussian centred on the middle tap, as cv2.getGaussianKernel; list of floats."""
    if size < 1 or size % 2 != 1:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    taps = [math.exp(-((i - size // 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    return [tap / sum(taps) for tap in taps]


def gaussian_window(size, sigma, dtype=torch.float32, device=None):
    """Normalized 2-D Gaussian window, (size, size), summing to 1: the outer product of the 1-D taps.

    This is the window BasicSR's SSIM builds from cv2.getGaussianKernel; `size` must be odd.
    """
    taps = torch.tensor(_gaussian_taps(size, sigma), dtype=torch.float64, device=device)
    return torch.outer(taps, taps).to(dtype)


def _filter_valid(images, taps):
    """Gaussian-weighted local means at every position where the window fits: (..., H, W) -> (..., H-w+1, W-w+1).

    The window is separable, so rows then columns are filtered with the 1-D taps as sums of shifted slices:
    the same numbers as a depthwise conv2d with the 2-D window (to rounding), but depthwise conv2d on CPU,
    float64 above all, was several times slower when measured, and this is fast on every device and dtype.
    """
    size = len(taps)
    height, width = images.shape[-2:]
    # Accumulating in place halves the memory traffic; autograd allows it (add_ needs no saved values).
    rows = taps[0] * images[..., :, : width - size + 1]
    for k in range(1, size):
        rows.add_(images[..., :, k:k + width - size + 1], alpha=taps[k])
    means = taps[0] * rows[..., : height - size + 1, :]
    for k in range(1, size):
        means.add_(rows[..., k:k + height - size + 1, :], alpha=taps[k])
    return means


def _check_image_pair(x, y, names):
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must be (B, C, H, W) of the same shape, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


def ssim(x, y, data_range=1.0, window_size=11, sigma=1.5):
    """Mean SSIM of each image, (B,), differentiable; Gaussian window, valid region, no padding.

    x, y: (B, C, H, W), any number of channels, values on a scale whose peak is `data_range` (1.0 for
    images in [0, 1], 255.0 for grey levels); nothing is clamped or rounded here. Constants K1 = 0.01,
    K2 = 0.03 (C1 = (K1 L)^2, C2 = (K2 L)^2, L = data_range); local statistics are Gaussian-weighted
    (population, not sample, variances). The SSIM map covers the (H - w + 1, W - w + 1) positions where
    the window fits; the result is its mean over positions and channels, i.e. the mean of the per-channel
    SSIMs. Computed and returned in the promoted dtype of x and y, at least float32 (float64 stays
    float64; bf16/fp16 inputs run in float32). Only elementwise ops, so autocast does not lower it.
    Range [-1, 1]; 1 for identical images.
    """
    _check_image_pair(x, y, ("x", "y"))
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the {window_size}x{window_size} "
                         "SSIM window")
    taps = _gaussian_taps(window_size, sigma)
    # E[x^2] - E[x]^2 cancels catastrophically in half precision: never compute below float32.
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x = x.to(dtype)
    y = y.to(dtype)
    # Variances and the covariance do not change when both images are shifted by one constant; shifted by their
    # mean (per image and channel), E[x^2] - E[x]^2 cancels far less (float32 SSIM of bright images: 4e-6 ->
    # 1e-7 off float64's). A constant: no gradient goes through it, and none is needed.
    shift = ((x.mean(dim=(2, 3), keepdim=True) + y.mean(dim=(2, 3), keepdim=True)) / 2).detach()
    x = x - shift
    y = y - shift
    mu_x = _filter_valid(x, taps)  # (B, C, H - w + 1, W - w + 1), of the shifted images
    mu_y = _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x**2
    var_y = _filter_valid(y * y, taps) - mu_y**2
    cov_xy = _filter_valid(x * y, taps) - mu_x * mu_y
    mu_x = mu_x + shift
    mu_y = mu_y + shift
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def _to_grey_levels(images):
    """[0, 1] floats -> float64 on the uint8 grid 0-255 (clamped, rounded half to even like BasicSR's tensor2img)."""
    return torch.round(images.to(torch.float64).clamp(0.0, 1.0) * PEAK_GREY_LEVEL)


def _luma(grey_levels):
    """(B, 3, H, W) RGB grey levels 0-255 -> (B, 1, H, W) MATLAB rgb2ycbcr Y in 16-235, not rounded."""
    weights = torch.tensor(Y_WEIGHTS_RGB, dtype=grey_levels.dtype, device=grey_levels.device) / PEAK_GREY_LEVEL
    return Y_OFFSET + (grey_levels * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _psnr_grey_levels(x, y):
    """(B,) PSNR in dB with peak 255, MSE over all pixels and channels of each image; +inf when equal."""
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PEAK_GREY_LEVEL**2 / mse)  # mse == 0 gives +inf


def image_quality(sr, hr, scale, chunk=None, ssim_dtype=None, keys=None):
    """Per-image PSNR / SSIM on the Y channel and on RGB, BasicSR (MATLAB) convention.

    sr, hr: (B, 3, H, W) RGB floats in [0, 1], any dtype or device. Each image is clamped to [0, 1],
    rounded to the uint8 grid (x * 255, round half to even) and kept as float64 grey levels 0-255; a border
    of `scale` pixels (the upscaling factor; 0 = no crop) is cropped on every side. Y is MATLAB rgb2ycbcr
    luma (16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1]; range 16-235, not rounded).
    PSNR = 10 log10(255^2 / MSE) in dB, MSE over all pixels (and channels for RGB), +inf for identical
    images. SSIM as `ssim(..., data_range=255)`; for RGB the mean of the three per-channel SSIMs.

    Returns {psnr_y, ssim_y, psnr_rgb, ssim_rgb} (or only those of `keys`, a subset: the others are not
    computed), each (B,) float64 on the inputs' device: one value per image, never a batch mean. Raises ValueError for non-finite inputs rather than reporting NaN.

    `chunk`: images computed together (default: 1 on the CPU, the whole batch elsewhere). On the CPU the
    float64 intermediates of a whole batch do not fit the caches: one image at a time was ~3-4x faster at
    224 px (BENCHMARKS.md), and an image's values then do not depend on the batch it came in.
    `ssim_dtype`: what SSIM's ~110 shifted-slice adds per image pair run in (default: float64 on the CPU,
    float32 elsewhere, where float64 is many times slower); float32 SSIM stays within 1e-6 of float64's
    (tests/test_metrics.py). PSNR, one pass, is float64 always.
    """
    if chunk is None:
        chunk = 1 if sr.device.type == "cpu" else max(1, len(sr))
    if ssim_dtype is None:
        ssim_dtype = torch.float64 if sr.device.type == "cpu" else torch.float32
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"chunk (images computed together) must be a positive int, got {chunk!r}")
    if len(sr) > chunk:
        _check_image_pair(sr, hr, ("sr", "hr"))
        parts = [image_quality(sr[i:i + chunk], hr[i:i + chunk], scale, chunk, ssim_dtype, keys)
                 for i in range(0, len(sr), chunk)]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    _check_image_pair(sr, hr, ("sr", "hr"))
    if sr.shape[1] != 3:
        raise ValueError(f"image_quality expects RGB images (B, 3, H, W), got {tuple(sr.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 0:
        raise ValueError(f"scale (border to crop, pixels) must be a non-negative int, got {scale!r}")
    cropped_size = min(sr.shape[-2:]) - 2 * scale
    if cropped_size < 11:
        raise ValueError(f"images {tuple(sr.shape[-2:])} cropped by {scale} px per side are smaller than the "
                         "11x11 SSIM window")
    if not (torch.isfinite(sr).all() and torch.isfinite(hr).all()):
        raise ValueError("sr or hr contains NaN or inf; a model producing them has failed and has no PSNR")
    sr_levels = _to_grey_levels(sr)
    hr_levels = _to_grey_levels(hr)
    if scale > 0:
        border = int(scale)
        sr_levels = sr_levels[..., border:-border, border:-border]
        hr_levels = hr_levels[..., border:-border, border:-border]
    sr_y = _luma(sr_levels)
    hr_y = _luma(hr_levels)
    measures = {
        "psnr_y": lambda: _psnr_grey_levels(sr_y, hr_y),
        "ssim_y": lambda: ssim(sr_y.to(ssim_dtype), hr_y.to(ssim_dtype), data_range=PEAK_GREY_LEVEL).double(),
        "psnr_rgb": lambda: _psnr_grey_levels(sr_levels, hr_levels),
        "ssim_rgb": lambda: ssim(sr_levels.to(ssim_dtype), hr_levels.to(ssim_dtype),
                                 data_range=PEAK_GREY_LEVEL).double(),
    }
    unknown = set(keys or ()) - set(measures)
    if unknown:
        raise ValueError(f"keys {sorted(unknown)}: image_quality measures {', '.join(measures)}")
    return {key: measure() for key, measure in measures.items() if keys is None or key in keys}


# ---------------------------------------------------------------------------------------------------------
# Face verification (numpy)


def l2_normalize(x):
    """Rows of `x` (N, D) scaled to unit Euclidean norm, float64. A zero row has no direction: ValueError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError(f"{int(np.sum(~(norms > 0)))} embedding(s) have zero (or NaN) norm")
    return x / norms


def pair_scores(emb_a, emb_b):
    """Cosine similarity of each pair (row i of emb_a with row i of emb_b), (N,) in [-1, 1], higher = more alike."""
    emb_a = l2_normalize(emb_a)
    emb_b = l2_normalize(emb_b)
    if emb_a.shape != emb_b.shape:
        raise ValueError(f"paired embeddings differ in shape: {emb_a.shape} vs {emb_b.shape}")
    return np.einsum("nd,nd->n", emb_a, emb_b)


def _check_scores_labels(scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores.shape} and {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 1 (genuine) or 0 (impostor)")
    return scores, labels.astype(bool)


def _unique_counts(scores, genuine):
    """Sorted unique scores (ascending) and, for each, how many genuine and impostor pairs have it."""
    unique, index = np.unique(scores, return_inverse=True)
    n_genuine = np.bincount(index, weights=genuine, minlength=len(unique))
    n_impostor = np.bincount(index, weights=~genuine, minlength=len(unique))
    return unique, n_genuine, n_impostor


def tpr_fpr(scores, labels, threshold):
    """(TPR, FPR) when pairs with score > threshold are accepted as genuine; both fractions in [0, 1]."""
    scores, genuine = _check_scores_labels(scores, labels)
    if genuine.all() or not genuine.any():
        raise ValueError("TPR and FPR need both genuine and impostor pairs")
    accepted = scores > threshold
    return float(accepted[genuine].mean()), float(accepted[~genuine].mean())


# insightface's calculate_roc thresholds, squared L2 distance of unit embeddings: 0.00, 0.01, ..., 3.99 (400).
# Built with the very same expression, so every value is the same float as theirs (e.g. 0.29000000000000004).
INSIGHTFACE_DISTANCE_THRESHOLDS = np.arange(0, 4, 0.01)
THRESHOLD_SEARCHES = ("insightface", "midpoints")


def cosine_to_distance(scores):
    """Squared Euclidean distance of two unit vectors from their cosine: 2 - 2 * score, (N,) float64 in [0, 4].

    Clipped below at 0: a cosine rounded just above 1 would give -4e-16, which insightface's sum of squared
    differences can never be (and which its lowest threshold, 0.0, would then accept).
    """
    return np.maximum(2.0 - 2.0 * np.asarray(scores, dtype=np.float64), 0.0)


def predicted_genuine(scores, threshold, search="insightface"):
    """(N,) bool: which pairs a threshold from `best_threshold(..., search)` predicts genuine.

    insightface: cosine_to_distance(scores) < threshold (threshold a squared L2 distance);
    midpoints: scores > threshold (threshold a cosine).
    """
    _check_search(search)
    if search == "insightface":
        return cosine_to_distance(scores) < threshold
    return np.asarray(scores, dtype=np.float64) > threshold


def _check_search(search):
    if search not in THRESHOLD_SEARCHES:
        raise ValueError(f"threshold search must be one of {THRESHOLD_SEARCHES}, got {search!r}")


def best_threshold(scores, labels, search="insightface"):
    """Threshold maximizing accuracy on (scores, labels), and that accuracy in [0, 1].

    search="insightface" (default), insightface's `calculate_roc`: candidates INSIGHTFACE_DISTANCE_THRESHOLDS
    (squared L2 distance 0.00-3.99, step 0.01), a pair "same" when 2 - 2 * score < threshold (strict), ties in
    accuracy to the first candidate in ascending distance (np.argmax), i.e. the highest cosine, the strictest.
    The threshold returned is a distance; its cosine is 1 - threshold / 2 (decide with `predicted_genuine`,
    not with that cosine: the two comparisons can round differently for a pair on the grid). No candidate
    accepts a distance >= 3.99 (cosine <= -0.995), so "accept all" is not available.

    search="midpoints" (a departure, not insightface): the exact optimum over every split of the scores,
    candidates -inf (accept all), the midpoints between consecutive sorted unique scores, +inf (reject all),
    genuine when score > threshold; ties to the highest cosine, the same direction as insightface. The
    threshold returned is a cosine. It departs from the insightface search in where the threshold sits (half
    way between the training scores vs the first grid point past them, i.e. just below the lowest accepted
    cosine) and in resolution (the grid, 0.005 apart in cosine, cannot split scores closer than that), so
    held-out pairs, and the accuracy, can differ.
    """
    _check_search(search)
    scores, genuine = _check_scores_labels(scores, labels)
    if search == "insightface":
        candidates = INSIGHTFACE_DISTANCE_THRESHOLDS
        dist = cosine_to_distance(scores)
        # Integer counts (tp + tn) per candidate: equal counts are equal accuracies, as insightface's floats.
        genuine_accepted = np.searchsorted(np.sort(dist[genuine]), candidates, side="left")  # dist < t
        impostor_rejected = (~genuine).sum() - np.searchsorted(np.sort(dist[~genuine]), candidates, side="left")
        right = genuine_accepted + impostor_rejected
        best = int(np.argmax(right))  # first maximum over ascending distance
    else:
        unique, n_genuine, n_impostor = _unique_counts(scores, genuine)
        candidates = np.concatenate([[-np.inf], (unique[:-1] + unique[1:]) / 2, [np.inf]])
        # Candidate k accepts exactly the unique scores with index >= k.
        genuine_accepted = np.concatenate([[0.0], np.cumsum(n_genuine[::-1])])[::-1]
        impostor_rejected = np.concatenate([[0.0], np.cumsum(n_impostor)])
        right = genuine_accepted + impostor_rejected
        best = len(right) - 1 - int(np.argmax(right[::-1]))  # last maximum: the highest cosine
    return float(candidates[best]), float(right[best] / len(scores))


def _fold_members(folds, n_pairs):
    """Row indices of each fold: `folds` is a count (contiguous blocks) or an (N,) array of fold ids."""
    if np.ndim(folds) == 0:
        if folds < 2 or n_pairs < folds:
            raise ValueError(f"need at least 2 folds and one pair per fold, got {folds} folds for {n_pairs} pairs")
        return np.array_split(np.arange(n_pairs), folds)
    fold_ids = np.asarray(folds)
    if fold_ids.shape != (n_pairs,):
        raise ValueError(f"fold ids must give one fold per pair, got shape {fold_ids.shape} for {n_pairs} pairs")
    members = [np.flatnonzero(fold_ids == fold) for fold in np.unique(fold_ids)]
    if len(members) < 2:
        raise ValueError("need at least 2 folds")
    return members


def kfold_accuracy(scores, labels, folds=10, search="insightface"):
    """LFW/RFW verification accuracy: best-accuracy threshold from the other folds, accuracy on the held-out one.

    With the default search this is insightface's `calculate_roc` accuracy, pair for pair: for each fold,
    `best_threshold(train, search="insightface")` (its distance grid, strict <, first best), then the held-out
    pairs classified as 2 - 2 * score < threshold. The one difference left: insightface computes the distance
    as the sum of squared differences of the unit embeddings, here it is 2 - 2 * cosine; the two agree to
    about 1e-16, which can only matter for a pair lying within rounding of a grid threshold.
    search="midpoints" is our exact-optimum search instead (see best_threshold for how it departs).

    folds: a number of contiguous blocks in the given pair order, sizes differing by at most one, the first
    n % folds one longer (sklearn KFold(n_splits=folds, shuffle=False), as insightface), or an (N,) array of
    fold ids when the pair list says which fold each pair belongs to (folds then taken in sorted id order).
    RFW's protocol uses the pair file's own folds (racecomp.datasets.rfw: fold = line index // (lines / 10),
    i.e. 10 blocks of consecutive lines, each half genuine then half impostor): for one race's pairs in file
    order, KFold(10, shuffle=False) gives exactly those blocks, since the line count is a multiple of 10.
    Returns dict:
      accuracy: mean of the fold accuracies, fraction in [0, 1] (multiply by 100 for percent tables);
      accuracy_std: population std over folds (ddof=0, as insightface's np.std);
      fold_accuracies (folds,);
      thresholds (folds,): each fold's threshold, a squared L2 distance (insightface) or a cosine (midpoints);
      correct: (N,) int 0/1, whether each pair is classified right under its own fold's threshold.
    """
    _check_search(search)
    scores, genuine = _check_scores_labels(scores, labels)
    members = _fold_members(folds, len(scores))
    correct = np.zeros(len(scores), dtype=np.int64)
    fold_accuracies = np.zeros(len(members))
    thresholds = np.zeros(len(members))
    for fold, held_out in enumerate(members):
        train = np.ones(len(scores), dtype=bool)
        train[held_out] = False
        thresholds[fold], _ = best_threshold(scores[train], genuine[train], search)
        correct[held_out] = predicted_genuine(scores[held_out], thresholds[fold], search) == genuine[held_out]
        fold_accuracies[fold] = correct[held_out].mean()
    return {
        "accuracy": float(fold_accuracies.mean()),
        "accuracy_std": float(fold_accuracies.std(ddof=0)),
        "fold_accuracies": fold_accuracies,
        "thresholds": thresholds,
        "correct": correct,
    }


def threshold_at_far(scores, labels, far):
    """Smallest threshold whose impostor false-accept rate (score > threshold) is <= far, far in [0, 1].

    It is the (k+1)-th largest impostor score with k = floor(far * n_impostors) false accepts allowed
    (-inf when every impostor may be accepted). Ties at that score are rejected together, so the FAR on
    these data is <= far, possibly below it.
    """
    scores, genuine = _check_scores_labels(scores, labels)
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    impostor = np.sort(scores[~genuine])[::-1]
    if len(impostor) == 0:
        raise ValueError("a false-accept rate needs impostor pairs")
    allowed = int(np.floor(far * len(impostor) + 1e-9))  # tolerance: 0.29 * 100 is 28.999999999999996
    return float(impostor[allowed]) if allowed < len(impostor) else -np.inf


def roc_points(scores, labels):
    """ROC at every unique score: (fpr, tpr, thresholds), each (U + 1,), from (0, 0) to (1, 1).

    thresholds are the unique scores in descending order followed by -inf; point j accepts the pairs with
    score > thresholds[j]. Pairs with tied scores enter together, so the curve does not depend on their order.
    """
    scores, genuine = _check_scores_labels(scores, labels)
    if genuine.all() or not genuine.any():
        raise ValueError("a ROC needs both genuine and impostor pairs")
    unique, n_genuine, n_impostor = _unique_counts(scores, genuine)
    tpr = np.concatenate([[0.0], np.cumsum(n_genuine[::-1])]) / n_genuine.sum()
    fpr = np.concatenate([[0.0], np.cumsum(n_impostor[::-1])]) / n_impostor.sum()
    thresholds = np.concatenate([unique[::-1], [-np.inf]])
    return fpr, tpr, thresholds


def tar_at_far(scores, labels, far):
    """True-accept rate at false-accept rate `far`, read off the ROC polyline, fraction in [0, 1].

    Linear interpolation between consecutive ROC points (a tied block of genuine and impostor scores is a
    straight segment, i.e. ties broken at random in expectation). Where the ROC is vertical at exactly
    `far`, the top of the vertical run is taken (the best TAR reachable at that FAR).
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    fpr, tpr, _ = roc_points(scores, labels)
    last = int(np.searchsorted(fpr, far, side="right")) - 1  # last ROC point with fpr <= far
    if last == len(fpr) - 1:
        return float(tpr[last])
    weight = (far - fpr[last]) / (fpr[last + 1] - fpr[last])
    return float(tpr[last] + weight * (tpr[last + 1] - tpr[last]))
