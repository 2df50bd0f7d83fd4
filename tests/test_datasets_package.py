"""racecomp.datasets re-exports its submodules' names: callers keep writing `datasets.X`, one object each."""
from racecomp import alignment, datasets
from racecomp.datasets import fairface, identities, images, rfw, sampling

EXPORTED = {
    alignment: ["ARCFACE_TEMPLATE_112", "align_face", "similarity_transform"],
    fairface: ["FAIRFACE_AGES", "FAIRFACE_COLUMNS", "FAIRFACE_GENDERS", "FAIRFACE_SPLITS", "FaceRecord",
               "FairFaceSR", "read_fairface", "split_dev"],
    identities: ["IDENTITY_IMAGE_EXTENSIONS", "IdentityImage", "check_identity_overlap", "read_identity_folders"],
    images: ["LR_KERNELS", "FaceImages", "load_rgb", "resize_bicubic", "downscale", "grey_levels", "unit_images"],
    rfw: ["Pair", "read_rfw", "read_rfw_landmarks", "read_rfw_pairs", "rfw_image_path"],
    sampling: ["SAMPLER_MODES", "MinoritySampler", "subsample_identities"],
}


def test_every_name_is_the_defining_modules_object():
    for module, names in EXPORTED.items():
        for name in names:
            assert getattr(datasets, name) is getattr(module, name), f"datasets.{name}"
