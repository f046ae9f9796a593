"""The studio's recipes: what each trains, checked by the library before a job is queued, and the quick one run."""

from __future__ import annotations

from imgclf.studio.recipes import plan_training


def test_each_recipe_plans_its_options_with_a_fifth_held_out_and_the_users_options_on_top(project):
    quick = plan_training(project, "quick", {})
    better = plan_training(project, "better", {"epochs": 3})
    cnn = plan_training(project, "cnn", {"val_split": 0.3})

    assert quick.options == {"data": str(project.data_dir), "model": "efficientnet_lite0", "val_split": 0.2}
    assert (quick.model, quick.epochs) == ("efficientnet_lite0", 30)
    assert better.options["fine_tune"] == "2" and better.epochs == 3 + 5  # the head's epochs, then fine-tuning
    assert cnn.model == "seed-cnn" and cnn.options["augment"] == "seed" and cnn.options["val_split"] == 0.3
