import json

import numpy as np
import pytest
import torch

from losstrail.store.rundir import (
    load_run_value,
    load_weights,
    read_settings,
    save_run_value,
    save_weights,
    write_settings,
)
from losstrail.values.plane import Plane
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory


def test_values_round_trip_without_pickle(tmp_path, rng):
    values = [
        Trajectory(
            rng.normal(size=(5, 3)).astype(np.float32),
            rng.normal(size=5),
            np.full(5, np.nan),
            np.arange(5),
            np.arange(5),
        ),
        Plane(*rng.normal(size=(3, 4)).astype(np.float32), method="pca", explained=(0.7, 0.2)),
        Plane(*rng.normal(size=(3, 4)).astype(np.float32), method="custom"),
        Surface(np.arange(3.0), np.arange(2.0), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))),
    ]
    for value in values:
        path = save_run_value(tmp_path, value)
        np.load(path, allow_pickle=False).close()
        back = load_run_value(tmp_path, type(value))
        for field in value.__dataclass_fields__:
            a, b = getattr(value, field), getattr(back, field)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
                assert a.dtype == b.dtype
            else:
                assert a == b


def test_surface_file_holds_the_named_arrays(tmp_path):
    save_run_value(tmp_path, Surface(np.arange(3.0), np.arange(2.0), np.ones((2, 3)), np.zeros((2, 3))))
    with np.load(tmp_path / "surface.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["accuracy", "loss", "xs", "ys"]


def test_weights_round_trip_with_weights_only(tmp_path, tiny_model):
    path = save_weights(tmp_path / "model.pt", tiny_model)
    state = torch.load(path, weights_only=True)
    other = type(tiny_model)(input_dim=2, num_classes=3, hidden_dim=4)
    load_weights(path, other)
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())


def test_settings_carry_versions_and_reject_other_formats(tmp_path):
    write_settings(tmp_path, {"reduction_method": "pca"})
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["versions"]["torch"] == torch.__version__
    assert read_settings(tmp_path) == {"reduction_method": "pca"}
    record["format_version"] = 99
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"format_version=99; this losstrail reads 1"):
        read_settings(tmp_path)


def test_missing_file_is_named(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"has no surface.npz; it holds model.pt"):
        load_run_value(tmp_path, Surface)


def test_values_have_one_line_reprs_whatever_their_size():
    import losstrail as lt

    big = np.zeros((2000, 5000), np.float32)
    t = lt.Trajectory(big, np.zeros(2000), np.zeros(2000), np.arange(2000), np.zeros(2000, dtype=np.int64))
    s = lt.Surface(np.arange(300.0), np.arange(200.0), np.zeros((200, 300)), np.zeros((200, 300)))
    p = lt.Plane(big[0], big[1], big[2], "pca", explained=(0.5, 0.25))
    for value in (t, s, p):
        text = repr(value)
        assert "\n" not in text and len(text) < 400, text
    assert "params=<float32 array 2000x5000>" in repr(t) and "loss=<float64 array 200x300>" in repr(s)
