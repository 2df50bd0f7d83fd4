"""The CSV contract: recipe ids, and that no study flag that changes results can be left out of a run's columns."""
from racecomp import schema


def test_recipe_id_separates_result_changing_arguments_only():
    base = dict(arch="resnet50", minority="Black", lr=1e-3, epochs=2, seed=0, out="/a", workers=2, device="cpu")
    recipe = schema.recipe_id(base, ("arch", "minority"))
    # Seed, output folder, workers, device and the identifying columns do not change the recipe ...
    same = dict(base, seed=3, out="/b", workers=0, device="cuda", arch="fastvit_sa24", minority="White")
    assert schema.recipe_id(same, ("arch", "minority")) == recipe
    # ... any other argument does, so runs that differ in it are never pooled as one experiment.
    assert schema.recipe_id(dict(base, lr=2e-3), ("arch", "minority")) != recipe
    assert schema.recipe_id(dict(base, epochs=3), ("arch", "minority")) != recipe


def test_gpu_speed_flags_and_later_flags_at_their_old_value_leave_the_recipe():
    base = dict(arch="resnet50", lr=1e-3, amp="fp16", seed=0)
    recipe = schema.recipe_id(base, ("arch",))
    # Other kernels for the same computation (rounding only), and --compile off (a run from before it existed).
    neutral = schema.NON_RESULT_ARGS + schema.KERNEL_ARGS
    assert schema.recipe_id(dict(base, deterministic=True, channels_last=True, compile=False), ("arch",),
                            neutral) == recipe
    assert schema.recipe_id(dict(base, compile=True), ("arch",)) != recipe  # drops the last partial batch
    assert schema.recipe_id(dict(base, amp="bf16"), ("arch",)) != recipe
