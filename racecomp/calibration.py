"""Calibration images for the activation ranges of a quantized model (see racecomp.quant.calibrate).

Four sources, each returning a list of batches (B, 3, H, W) float32 tensors ready for `quant.calibrate`:
- `real_calibration`: N training images, optionally with a race composition chosen on purpose;
- `folder_calibration`: a folder of generated faces (e.g. StyleGAN output);
- `gan_calibration`: faces from the DCGAN generator of the optional PyPI package `gan-face-generate`;
- `datafree_calibration`: ZeroQ-style images distilled from the model's own BatchNorm statistics.
Images from files and the GAN are RGB scaled to `value_range` (default [0, 1], the upscalers' input; pass (-1, 1)
for the face backbones). Real images are passed through as the dataset gives them; distilled images live in the
model's input space, unclipped.
"""
import importlib
import importlib.util
import os

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from racecomp import datasets, files
from racecomp.errors import InputError
from racecomp.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
GAN_LATENT_SIZE = 100  # gan-face-generate's DCGAN: z of 100 values -> (3, 64, 64) image in [-1, 1] (tanh)
GAN_FEATURE_MAPS = 64
GAN_IMAGE_SIZE = 64


def _batched(images, batch_size):
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    return [images[start:start + batch_size] for start in range(0, len(images), batch_size)]


def _to_range(images, value_range):
    """[0, 1] images mapped linearly onto value_range = (low, high)."""
    low, high = value_range
    return images * (high - low) + low


def _composition_counts(race_weights, available, n):
    """Images per race: n split in proportion to the weights, largest remainders rounded up, exact total n."""
    unknown = sorted(set(race_weights) - set(available))
    if unknown:
        raise InputError(f"race_weights names races absent from the data: {unknown}; present: {sorted(available)}")
    if any(weight < 0 for weight in race_weights.values()) or sum(race_weights.values()) <= 0:
        raise InputError(f"race_weights must be non-negative with a positive sum, got {race_weights}")
    total = sum(race_weights.values())
    exact = {race: n * weight / total for race, weight in race_weights.items()}
    counts = {race: int(share) for race, share in exact.items()}
    by_remainder = sorted(exact, key=lambda race: (exact[race] - counts[race], race_weights[race]), reverse=True)
    for race in by_remainder[:n - sum(counts.values())]:
        counts[race] += 1
    for race, count in counts.items():
        if count > available[race]:
            raise InputError(f"race_weights ask for {count} {race!r} images but only {available[race]} exist")
    return counts


def real_calibration(images, n, races=None, race_weights=None, seed=0, batch_size=32, image_key="image"):
    """N images drawn without replacement from training data, seeded; returns (batches, composition).

    images: a (N, 3, H, W) tensor, or a Dataset whose items are image tensors or dicts holding one under
    `image_key` ("image" for datasets.FaceImages, "lr" or "hr" for datasets.FairFaceSR). Images are returned as
    given (same layout and value range; uint8 grey levels as floats in [0, 1], datasets.unit_images), in a
    shuffled order so every batch mixes races.
    races: one label per image (e.g. [record.race for record in records]); needed for `race_weights` and for the
    composition. race_weights: {race: weight} to skew the composition on purpose, e.g. {"White": 1.0} for an
    all-White calibration set or {"Black": 0.1, "White": 0.9}; races left out get no images. Counts are n split in
    proportion to the weights (largest remainder), and asking for more images of a race than exist is an error.
    composition: {race: images drawn} for every race in `races` (0 for races the weights exclude); empty when races
    is None.
    """
    total = len(images)
    if not 1 <= n <= total:
        raise InputError(f"real_calibration: n must be in [1, {total}] (the number of images), got {n}")
    if races is not None and len(races) != total:
        raise InputError(f"real_calibration: {len(races)} race labels for {total} images")
    generator = torch.Generator().manual_seed(seed)
    if race_weights is None:
        chosen = torch.randperm(total, generator=generator)[:n].tolist()
    else:
        if races is None:
            raise InputError("real_calibration: race_weights needs the race label of every image (races=...)")
        indices_of = {}
        for index, race in enumerate(races):
            indices_of.setdefault(race, []).append(index)
        counts = _composition_counts(race_weights, {race: len(idx) for race, idx in indices_of.items()}, n)
        chosen = []
        for race in sorted(counts):
            pool = indices_of[race]
            chosen += [pool[i] for i in torch.randperm(len(pool), generator=generator)[:counts[race]].tolist()]
        chosen = [chosen[i] for i in torch.randperm(n, generator=generator).tolist()]
    composition = {}
    if races is not None:
        composition = {race: 0 for race in sorted(set(races))}
        for index in chosen:
            composition[races[index]] += 1
    if torch.is_tensor(images):
        picked = images[chosen]
    else:
        items = [images[index] for index in chosen]
        picked = torch.stack([item[image_key] if isinstance(item, dict) else item for item in items])
    return _batched(datasets.unit_images(picked).float(), batch_size), composition


def _load_square_rgb(path, image_size):
    """Image file -> (3, S, S) float in [0, 1]: RGB, centre-cropped to a square, PIL bicubic resize to S."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from error
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((image_size, image_size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255.0


def folder_calibration(folder, n, image_size, batch_size=32, value_range=(0.0, 1.0)):
    """The first n images (.jpg/.jpeg/.png, any case, searched recursively, sorted by relative path) of `folder`.

    Each is converted to RGB, centre-cropped to a square and resized (PIL bicubic) to image_size, then scaled to
    value_range. A missing folder, a folder with fewer than n images, or an unreadable file is an error.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: calibration folder does not exist")
    paths = sorted(os.path.relpath(os.path.join(root, name), folder)
                   for root, _, names in os.walk(folder) for name in names
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise InputError(f"{folder}: no .jpg/.jpeg/.png images found for calibration")
    if not 1 <= n <= len(paths):
        raise InputError(f"{folder}: {n} calibration images requested but the folder holds {len(paths)}")
    images = torch.stack([_load_square_rgb(os.path.join(folder, path), image_size) for path in paths[:n]])
    return _batched(_to_range(images, value_range), batch_size)


def gan_package_available():
    """Whether the optional package gan-face-generate is importable (checked without importing it)."""
    return importlib.util.find_spec("gan_face_generate") is not None


def gan_calibration(n, image_size, seed=0, batch_size=32, value_range=(0.0, 1.0)):
    """n faces from the DCGAN generator shipped in the optional package `gan-face-generate` (not a dependency).

    Latents z ~ N(0, I) of size 100 from a generator seeded with `seed`; the generator (architecture and
    `weights.tar` from the package, loaded with weights_only=True) makes (3, 64, 64) RGB faces in [-1, 1], mapped to
    [0, 1], resized with antialiased bicubic interpolation to image_size, clamped to [0, 1], then scaled to
    value_range. Install the package with `pip install --no-deps gan-face-generate` (its declared dependencies,
    e.g. wandb and matplotlib, are only needed for its own training and viewing scripts).
    Licence: the package code is MIT, but its generator was trained on Microsoft's DigiFace-1M, which may be used
    for non-commercial research only. The race composition of the generated faces is unknown and not controlled.
    """
    try:
        package = importlib.import_module("gan_face_generate")
        models = importlib.import_module("gan_face_generate.models")
    except ImportError as error:
        raise ImportError("gan_calibration needs the optional package gan-face-generate: "
                          "`pip install --no-deps gan-face-generate`, or generate faces elsewhere and use "
                          "folder_calibration (--synthetic-folder)") from error
    weights_path = os.path.join(os.path.dirname(package.__file__), "weights.tar")
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"{weights_path}: gan-face-generate is installed without its generator weights")
    generator_net = models.Generator(0, 3, GAN_LATENT_SIZE, GAN_FEATURE_MAPS)
    generator_net.load_state_dict(files.load_checkpoint(weights_path)["netG_state_dict"])  # weights_only
    generator_net.eval()
    latents = torch.randn(n, GAN_LATENT_SIZE, 1, 1, generator=torch.Generator().manual_seed(seed))
    batches = []
    with torch.no_grad():
        for z in _batched(latents, batch_size):
            faces = (generator_net(z) + 1.0) / 2.0  # (B, 3, 64, 64) in [0, 1]
            if image_size != GAN_IMAGE_SIZE:
                faces = F.interpolate(faces, size=(image_size, image_size), mode="bicubic", align_corners=False,
                                      antialias=True)
            batches.append(_to_range(faces.clamp(0.0, 1.0), value_range))
    return batches


def batchnorm_statistics_loss(model, x):
    """ZeroQ's loss: sum over the model's BatchNorm layers of ||batch mean - running_mean||_2 +
    ||batch std - running std||_2, where batch mean/std are per channel over every dimension but 1 of the BN
    layer's input (biased variance) and std = sqrt(var + eps) on both sides. The model should be in eval mode."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    if not layers:
        raise InputError("batchnorm_statistics_loss: the model has no BatchNorm layer with running statistics")
    terms = []

    def record(layer, inputs):
        values = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1)  # (C, everything else)
        mean = values.mean(dim=1)
        std = torch.sqrt(values.var(dim=1, unbiased=False) + layer.eps)
        terms.append(torch.linalg.vector_norm(mean - layer.running_mean)
                     + torch.linalg.vector_norm(std - torch.sqrt(layer.running_var + layer.eps)))

    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(terms).sum()


def datafree_calibration(model, n, image_size, steps=500, lr=0.5, seed=0, batch_size=32):
    """ZeroQ distilled data: returns (batches, losses), losses[b][s] = BN-statistics loss of batch b before
    update s.

    Each batch starts from N(0, 1) noise (seeded) and is optimized with Adam(lr) for `steps` steps on
    `batchnorm_statistics_loss`, with the model in eval mode and its weights untouched (gradients are taken
    with respect to the images only); the model's train/eval mode is restored afterwards. Pass the float model.
    The images live in the model's input space and are not clipped to any range.
    """
    if n < 1 or steps < 1:
        raise InputError(f"datafree_calibration: n and steps must be >= 1, got n={n}, steps={steps}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    batches, losses = [], []
    progress = Progress("data-free calibration", -(-n // batch_size) * steps, unit="steps")
    try:
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            images = torch.randn(size, 3, image_size, image_size, generator=generator).to(device).requires_grad_()
            optimizer = torch.optim.Adam([images], lr=lr)
            history = []
            for _ in range(steps):
                loss = batchnorm_statistics_loss(model, images)
                (images.grad,) = torch.autograd.grad(loss, [images])
                optimizer.step()
                history.append(loss.item())
                progress.update()
            batches.append(images.detach())
            losses.append(history)
    finally:
        model.train(was_training)
    progress.finish()
    return batches, losses
