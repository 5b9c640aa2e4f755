"""The functions a config names by ``_target_`` (augmenters, datasets) and the stages, looked up through Hydra."""

from __future__ import annotations

import importlib

INSTALL = "bash scripts/setup.sh"


class MissingPackage(ImportError):
    """A third-party package that the named function needs is not installed (e.g. mmdet for the train stage)."""


def locate(dotted: str, what: str):
    """The function at ``dotted`` (Hydra's ``get_method``). A missing third-party package raises ``MissingPackage``
    naming it and the install command; a bad name raises a one-line ``ValueError`` starting with ``what``."""
    from hydra.utils import get_method

    try:
        importlib.import_module(dotted.rpartition(".")[0])
    except ModuleNotFoundError as e:
        package = (e.name or "").split(".")[0]
        if package and package != "mfexp":
            raise MissingPackage(
                f"{what} ({dotted}) needs the Python package {package!r}, which is not installed; "
                f"install the dependencies with: {INSTALL}",
                name=package,
            ) from None
    except ValueError:  # an empty module path: get_method names the problem
        pass
    try:
        return get_method(dotted)
    except (ImportError, ValueError) as e:
        raise ValueError(f"{what}={dotted!r} names no function ({' '.join(str(e).split())})") from None
