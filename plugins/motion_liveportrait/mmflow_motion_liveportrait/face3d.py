"""A generic 3-D face for dlib's 68 landmarks, head rotations in image axes, and a weak-perspective pose fit.

The mean shape is Google MediaPipe's canonical face model (``mediapipe/modules/face_geometry/data/
canonical_face_model.obj``, Apache License 2.0; centimetres, a metric average face) at the vertices that match
the 68 iBUG/dlib points: :data:`MEDIAPIPE_VERTICES` lists, for the image-left half and the midline, which
vertex each point is (jaw from the ear to the chin, brow outer to inner, nose bridge and nostrils, eye and lip
contours in dlib's order); the image-right half is its mirror (the model is symmetric). The vertices' coordinates
are copied below (MEDIAPIPE_XYZ); the model's axes (x right, y up, z towards the viewer) become image axes here.

Image axes: x right, y down, z towards the viewer (the nose tip has the largest z). Angles follow the renderer's
reading of LivePortrait's pose (``fallback.relative_pose``): positive yaw turns the nose tip to image-left,
positive pitch turns it down, positive roll turns the eye line clockwise on screen; a head rotation is
``Rz(roll) · Ry(yaw) · Rx(pitch)`` applied to column vectors.
"""

from __future__ import annotations

import math

import numpy as np

# dlib index → MediaPipe canonical vertex, for the image-left half and the midline (the subject's right side is the
# model's negative x). Image-right points are the mirrors of MIRROR[index].
MEDIAPIPE_VERTICES = {
    0: 127, 1: 234, 2: 132, 3: 58, 4: 172, 5: 150, 6: 149, 7: 148, 8: 152,  # jaw, ear → chin
    17: 70, 18: 63, 19: 105, 20: 66, 21: 107,  # brow, outer → inner
    27: 168, 28: 6, 29: 5, 30: 4,  # nose bridge → tip
    31: 98, 32: 97, 33: 2,  # nostrils → subnasale
    36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144,  # eye
    48: 61, 49: 40, 50: 37, 51: 0, 57: 17, 58: 84, 59: 91,  # outer lips
    60: 78, 61: 81, 62: 13, 66: 14, 67: 178,  # inner lips
}

MEDIAPIPE_XYZ = {
    0: (0.0, -3.406404, 5.979507), 2: (0.0, -2.089024, 6.058267), 4: (0.0, -0.46317, 7.58658),
    5: (0.0, 0.365669, 7.24287), 6: (0.0, 2.473255, 5.788627), 13: (0.0, -3.994436, 5.219482),
    14: (0.0, -4.5424, 5.404754), 17: (0.0, -5.365123, 5.535441), 33: (-4.445859, 2.663991, 3.173422),
    37: (-0.606033, -3.924562, 5.444923), 40: (-1.91491, -3.803146, 5.02893), 58: (-6.719682, -4.788645, -1.745401),
    61: (-2.456206, -4.342621, 4.283884), 63: (-4.985894, 4.802461, 3.751977), 66: (-2.644548, 4.524654, 4.921559),
    70: (-5.720968, 4.254584, 2.830852), 78: (-2.153084, -4.276322, 4.038093), 81: (-1.024340, -3.989851, 4.926693),
    84: (-0.769720, -6.095394, 4.985883), 91: (-1.838624, -4.828746, 4.823737), 97: (-0.597442, -2.013686, 5.866456),
    98: (-1.405627, -1.714196, 5.241087), 105: (-3.986562, 5.109487, 4.466315), 107: (-1.395634, 5.011963, 5.316032),
    127: (-7.743095, 2.364999, -2.005167), 132: (-7.270895, -2.890917, -2.252455), 133: (-1.856432, 2.585245, 3.757904),
    144: (-3.670075, 2.360153, 3.63523), 148: (-1.292924, -9.29592, 4.094063), 149: (-3.210651, -8.533278, 2.802001),
    150: (-4.068926, -7.993109, 1.925119), 152: (0.0, -9.403378, 4.264492), 153: (-2.724032, 2.315802, 3.777151),
    158: (-2.724032, 2.96181, 3.871767), 160: (-3.670075, 2.927714, 3.724325), 168: (0.0, 3.271027, 5.236015),
    172: (-5.940524, -6.223629, -0.631468), 178: (-1.181124, -4.579996, 5.189564), 234: (-7.664182, 0.673132, -2.435867),
}

MIRROR = {
    **{16 - i: i for i in range(8)},  # jaw
    **{26 - i: 17 + i for i in range(5)},  # brows
    35: 31, 34: 32,  # nostrils
    45: 36, 44: 37, 43: 38, 42: 39, 47: 40, 46: 41,  # eyes
    54: 48, 53: 49, 52: 50, 55: 59, 56: 58, 64: 60, 63: 61, 65: 67,  # lips
}
"""Image-right dlib index → its image-left mirror."""


def _mean_face() -> np.ndarray:
    """``68×3`` in image axes, centred on the points' mean, in centimetres."""
    points = np.zeros((68, 3))
    for index, vertex in MEDIAPIPE_VERTICES.items():
        points[index] = MEDIAPIPE_XYZ[vertex]
    for index, mirror in MIRROR.items():
        points[index] = points[mirror] * (-1, 1, 1)
    points[:, 1] *= -1  # model y up → image y down
    return points - points.mean(axis=0)


MEAN_FACE = _mean_face()
"""The generic 3-D face at dlib's 68 points (image axes, centimetres, centred)."""


def rotation(pitch, yaw, roll) -> np.ndarray:
    """Head rotations (degrees, scalars or ``T``) → ``…×3×3`` ``Rz(roll)·Ry(yaw)·Rx(pitch)`` in image axes."""
    p, y, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (pitch, yaw, roll))
    shape = np.broadcast(p, y, r).shape
    p, y, r = (np.broadcast_to(a, shape) for a in (p, y, r))
    one, zero = np.ones(shape), np.zeros(shape)

    def matrix(rows):
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    # Pitch: the nose (z > 0) goes down (+y); yaw: it goes left (−x); roll: clockwise on screen (y down).
    rx = matrix([[one, zero, zero], [zero, np.cos(p), np.sin(p)], [zero, -np.sin(p), np.cos(p)]])
    ry = matrix([[np.cos(y), zero, -np.sin(y)], [zero, one, zero], [np.sin(y), zero, np.cos(y)]])
    rz = matrix([[np.cos(r), -np.sin(r), zero], [np.sin(r), np.cos(r), zero], [zero, zero, one]])
    return rz @ ry @ rx


def angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """``(pitch, yaw, roll)`` degrees of a :func:`rotation` matrix."""
    yaw = math.asin(float(np.clip(matrix[2, 0], -1, 1)))
    pitch = math.atan2(-float(matrix[2, 1]), float(matrix[2, 2]))
    roll = math.atan2(float(matrix[1, 0]), float(matrix[0, 0]))
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def lift(landmarks: np.ndarray, shape: np.ndarray = MEAN_FACE) -> np.ndarray:
    """The 2-D landmarks ``68×2`` of a portrait with depths: the mean face fitted to them (:func:`fit_pose`) gives
    each point its depth in the portrait's pixels, so the portrait's own 2-D shape is kept exactly."""
    pose = fit_pose(landmarks, shape)
    depth = pose["scale"] * (shape @ pose["R"].T)[:, 2]
    return np.concatenate([np.asarray(landmarks, np.float64), depth[:, None]], axis=1)


def fit_pose(landmarks: np.ndarray, shape: np.ndarray = MEAN_FACE) -> dict:
    """Weak-perspective pose of ``shape`` (``N×3``) seen as ``landmarks`` (``N×2`` pixels): the rotation ``R``,
    ``scale`` and 2-D ``t`` minimising ``Σ |scale·(R X)_xy + t − x|²`` (Gauss–Newton on the three angles from a
    closed-form start), with its ``pitch, yaw, roll`` (degrees) and the RMS residual in pixels."""
    from scipy.optimize import least_squares

    target = np.asarray(landmarks, dtype=np.float64)
    shape = np.asarray(shape, dtype=np.float64)
    if target.ndim != 2 or target.shape[1] != 2 or shape.shape != (len(target), 3):
        raise ValueError(f"landmarks must be N×2 and shape N×3 for the same N; got {target.shape} and {shape.shape}")
    centred_x, centred_y = target - target.mean(axis=0), shape - shape.mean(axis=0)

    def project(params):
        rotated = centred_y @ rotation(*params[:3]).T
        return np.exp(params[3]) * rotated[:, :2]

    # Start: the 2×3 affine camera in closed form, its rows orthonormalised, the scale from their norms.
    affine, *_ = np.linalg.lstsq(centred_y, centred_x, rcond=None)  # 3×2
    rows = affine.T
    scale0 = float(np.linalg.norm(rows, axis=1).mean())
    u, _, vt = np.linalg.svd(rows / scale0, full_matrices=False)
    r12 = u @ vt
    start = rotation_from_rows(r12)
    fit = least_squares(lambda params: (project(params) - centred_x).ravel(),
                        np.array([*angles(start), math.log(scale0)]), method="lm")
    R = rotation(*fit.x[:3])
    scale = float(np.exp(fit.x[3]))
    t = target.mean(axis=0) - scale * (shape.mean(axis=0) @ R.T)[:2]
    residual = float(np.sqrt(np.mean(fit.fun ** 2) * 2))
    pitch, yaw, roll = angles(R)
    return {"R": R, "scale": scale, "t": t, "pitch": pitch, "yaw": yaw, "roll": roll, "rms_px": residual}


def rotation_from_rows(rows: np.ndarray) -> np.ndarray:
    """A rotation whose first two rows are the orthonormal ``2×3`` ``rows`` (the third is their cross product)."""
    third = np.cross(rows[0], rows[1])
    return np.stack([rows[0], rows[1], third])
