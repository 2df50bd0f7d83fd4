"""Data layer: FairFace (super-resolution), RFW pairs (verification), identity folders (recognition training).

Readers check everything that could silently change a number: labels are spelled exactly as in
`racecomp.races`, every listed image exists, and bad data raises an error naming the file and line.
Images are decoded only when an item is requested, never at read time.

Modules: images (decoding, resampling, FaceImages), fairface (reader, dev split, FairFaceSR),
sampling (under-representing a race), rfw (pairs, landmarks), identities (identity folders, overlap
guard), check (`python -m racecomp.datasets check`: a downloaded dataset against its published layout
and sizes). Every public name of the readers is re-exported here, so callers write `datasets.X`.
"""
from racecomp.alignment import ARCFACE_TEMPLATE_112, align_face, similarity_transform  # noqa: F401
from racecomp.datasets.fairface import (FAIRFACE_AGES, FAIRFACE_COLUMNS, FAIRFACE_GENDERS,  # noqa: F401
                                        FAIRFACE_SPLITS, FaceRecord, FairFaceSR, read_fairface, split_dev)
from racecomp.datasets.identities import (IDENTITY_IMAGE_EXTENSIONS, IdentityImage,  # noqa: F401
                                          check_identity_overlap, read_identity_folders)
# load_rgb and resize_bicubic: racecomp.imagecache decodes and resizes exactly as the datasets do.
from racecomp.datasets.check import check_identity_images, drop_unreadable  # noqa: F401
from racecomp.datasets.images import (LR_KERNELS, FaceImages, downscale, grey_levels, load_rgb,  # noqa: F401
                                      resize_bicubic, unit_images)
from racecomp.datasets.rfw import Pair, read_rfw, read_rfw_landmarks, read_rfw_pairs, rfw_image_path  # noqa: F401
from racecomp.datasets.sampling import SAMPLER_MODES, MinoritySampler, subsample_identities  # noqa: F401
