import numpy as np
import pytest

from losstrail.directions import Plane
from losstrail.projection import project
from losstrail.record import Trajectory


def test_coordinates_and_distance_from_the_plane(rng):
    p = 12
    u, v, normal = np.linalg.qr(rng.normal(size=(p, 3)))[0].T
    origin = rng.normal(size=p)
    coords, heights = rng.normal(size=(9, 2)), rng.normal(size=9)
    params = origin + coords[:, :1] * u + coords[:, 1:] * v + heights[:, None] * normal
    traj = Trajectory(params.astype(np.float32), np.arange(9.0), np.zeros(9), np.arange(9), np.zeros(9, dtype=np.int64))
    proj = project(Plane(origin.astype(np.float32), u.astype(np.float32), v.astype(np.float32), "custom"), traj)
    np.testing.assert_allclose(proj.xy, coords, atol=1e-5)
    np.testing.assert_allclose(proj.off_plane, np.abs(heights), atol=1e-5)
    assert np.array_equal(proj.loss, traj.loss)


def test_size_mismatch_is_named():
    traj = Trajectory(np.zeros((3, 4), np.float32), np.zeros(3), np.zeros(3), np.arange(3), np.arange(3))
    plane = Plane(np.zeros(5, np.float32), np.ones(5, np.float32), np.ones(5, np.float32), "custom")
    with pytest.raises(ValueError, match=r"the trajectory has P=4 parameters but the plane has P=5"):
        project(plane, traj)
