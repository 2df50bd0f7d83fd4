"""Batches as the training loop sees them: moved to the device (uint8 images made float there), and counted."""
import torch

from racecomp.datasets.images import unit_images


def to_device(batch, device, channels_last=False):
    """`batch` on `device`, its uint8 4-D tensors (images as grey levels: a quarter of float32's bytes to copy)
    made float in [0, 1] there (datasets.unit_images); with channels_last its 4-D images in that memory format."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() != 4 or not (batch.is_floating_point() or batch.dtype == torch.uint8):
            return batch.to(device, non_blocking=True)
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        images = unit_images(batch.to(device, non_blocking=True, memory_format=memory_format))
        # The uint8 lookup keeps the index's memory format on the CPU; this makes it sure (a no-op then).
        return images.contiguous(memory_format=torch.channels_last) if channels_last else images
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def batch_size(batch):
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return batch_size(batch[0])
    return 1
