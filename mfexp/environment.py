"""The locked environment and the versions a run used.

``constraints.txt`` (the lock) pins every distribution of the project's venv to one exact version; ``scripts/setup.sh``
installs with ``pip -c constraints.txt``. Two exceptions: the editable ``mfexp`` itself is not listed, and ``torch`` and
``mmcv`` are pinned by their public version (``torch==2.13.0`` matches the CPU and every CUDA build; mmcv is built
locally from its source archive). CUDA builds of torch bring their own runtime distributions (``nvidia-*``,
``triton``), which a lock made on a CPU machine cannot name: they are allowed beside it.

    python -m mfexp.environment lock [PATH]    write the lock from this venv (scripts/lock.sh)
    python -m mfexp.environment check [PATH]   exit 1 unless this venv holds exactly the locked versions (CI)
    python -m mfexp.environment versions       the versions a run records (versions.json), as JSON
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
# what a run records in its versions.json, besides the mfexp commit
RECORDED = ("torch", "diffusers", "transformers", "mmdet", "mmcv")
UNLOCKED = ("mfexp",)  # the project itself, installed editable
CUDA_RUNTIME = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")  # distributions of a CUDA torch build
HEADER = """\
# The locked environment: every distribution of the project's venv at one exact version, installed by
# scripts/setup.sh (pip -c constraints.txt) and checked by CI (python -m mfexp.environment check).
# Refresh: change pyproject.toml or the venv, then `bash scripts/lock.sh` (rewrites this file from .venv).
# torch and mmcv are pinned by their public version (CPU or CUDA build; mmcv is built by setup.sh).
"""


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """A version without its local label: ``2.13.0+cu126`` -> ``2.13.0``."""
    return version.split("+", 1)[0]


def installed() -> dict[str, str]:
    """{normalised name: version} of every distribution this interpreter sees."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(normalise(name), dist.version)
    return out


def lock_text(versions: dict[str, str]) -> str:
    """The lock file for ``versions``: sorted ``name==version`` lines (public versions), the project left out."""
    lines = [f"{n}=={public(v)}" for n, v in sorted(versions.items()) if n not in UNLOCKED]
    return HEADER + "\n".join(lines) + "\n"


def read_lock(path: str | Path = LOCK) -> dict[str, str]:
    """{normalised name: version} of a lock file's ``name==version`` lines (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=]+)", line)
        if not m:
            raise ValueError(f"{path}:{n}: not a name==version line: {line!r}")
        out[normalise(m.group(1))] = m.group(2)
    return out


def differences(locked: dict[str, str], have: dict[str, str]) -> list[str]:
    """What keeps ``have`` (installed) from matching ``locked``, one line each; empty when it matches. Versions
    compare without local labels; the project and a CUDA torch's runtime distributions need no lock line."""
    out = []
    for name, version in sorted(locked.items()):
        if name not in have:
            out.append(f"{name}: locked {version}, not installed")
        elif public(have[name]) != version:
            out.append(f"{name}: locked {version}, installed {have[name]}")
    for name in sorted(set(have) - set(locked)):
        if name not in UNLOCKED and not CUDA_RUNTIME.match(name):
            out.append(f"{name}: installed {have[name]}, not in the lock")
    return out


def git(*args: str) -> str | None:
    """A git command's output in the project's repository, or None (no git, not a repository)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run_versions() -> dict:
    """What a run records in versions.json: the versions of RECORDED (None where not installed), the mfexp commit
    and whether its tree differed from it (changed or untracked files git does not ignore; both None outside a git
    checkout)."""
    have = installed()
    out: dict = {name: have.get(name) for name in RECORDED}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    out["mfexp_commit"] = commit
    out["mfexp_dirty"] = bool(status) if status is not None else None
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command, path = (argv + [""])[0], Path(argv[1]) if len(argv) > 1 else LOCK
    if command == "lock":
        path.write_text(lock_text(installed()))
        print(f"wrote {path}: {len(read_lock(path))} distributions")
        return 0
    if command == "check":
        diff = differences(read_lock(path), installed())
        for line in diff:
            print(line, file=sys.stderr)
        print(
            f"venv differs from {path} in {len(diff)} distributions (bash scripts/setup.sh installs the lock; "
            "bash scripts/lock.sh rewrites it)"
            if diff
            else f"venv matches {path}"
        )
        return 1 if diff else 0
    if command == "versions":
        print(json.dumps(run_versions(), indent=2))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
