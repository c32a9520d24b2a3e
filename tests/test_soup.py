"""Weight averaging (convert/experiments/soup.py) on small untrained models: real Keras, no data file."""

import numpy as np
import pytest

from convert.models import build_model
from convert.experiments.soup import accuracy, average_weights, greedy_soup
from edge.errors import ModelError


def _perturbed(model, seed):
    import keras

    clone = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    clone.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()])
    return clone


def test_average_is_the_element_wise_mean():
    base = build_model("mini_xception")
    a, b = _perturbed(base, 1), _perturbed(base, 2)
    avg = average_weights([a, b])
    for wa, wb, wm in zip(a.get_weights(), b.get_weights(), avg):
        np.testing.assert_allclose(wm, (wa + wb) / 2, rtol=1e-6, atol=1e-7)


def test_different_architectures_are_refused():
    with pytest.raises(ModelError, match="same start"):
        average_weights([build_model("mini_xception"), build_model("tiny")])


def test_greedy_soup_keeps_an_ingredient_that_does_not_hurt(tmp_path):
    base = build_model("mini_xception")
    a, b = _perturbed(base, 1), _perturbed(base, 2)
    a.save(tmp_path / "a.keras")
    a.save(tmp_path / "same.keras")
    b.save(tmp_path / "b.keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 48, 48, 1)).astype(np.float32)
    y = rng.integers(0, 7, 64)
    # a copy of the first ingredient scores the same as the soup so far, so it is kept
    soup, report = greedy_soup([tmp_path / "a.keras", tmp_path / "same.keras"], x, x[:32], y[:32], log=lambda s: None)
    assert len(report["chosen"]) == 2 and all(s["kept"] for s in report["greedy_steps"])
    conv = next(l for l in soup.layers if type(l).__name__ == "Conv2D")
    np.testing.assert_allclose(conv.get_weights()[0], a.get_layer(conv.name).get_weights()[0], atol=1e-7)
    # every ingredient is scored and every step recorded, whichever way it goes
    soup, report = greedy_soup([tmp_path / "a.keras", tmp_path / "b.keras"], x, x[:32], y[:32], log=lambda s: None)
    assert len(report["ingredients"]) == 2 and len(report["greedy_steps"]) == 2
    assert report["val_accuracy"] == max(s["val_accuracy"] for s in report["greedy_steps"] if s["kept"])
    assert accuracy(soup, x[:32], y[:32]) == report["val_accuracy"]  # the model returned is the one scored
