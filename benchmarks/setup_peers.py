"""Create ``benchmarks/.venv-peers`` and install the peer readers into it.

The peers (wsidicom, the old dicomslide 0.7.2, OpenSlide) pin dependencies that
conflict with ours, so they live in their own virtual env and are driven through
``benchmarks/peer_worker.py`` in a subprocess.

wsidicomizer goes into a second env, ``benchmarks/.venv-convert`` (only with
``--convert``): its newest release that supports Python 3.11 pins an old wsidicom
(0.26.1 -> wsidicom 0.31), which would otherwise replace the newest wsidicom we
want to benchmark. The default test slide is made by OrthancWSIDicomizer, so the
convert env is optional.

It also prepares what ``benchmarks/run.py`` needs on a fresh machine besides the peers:
``tifffile`` in *this* interpreter (the test slide is written as a pyramidal TIFF first;
the project's extras do not include it) and the Debian packages ``orthanc``,
``orthanc-dicomweb`` and ``orthanc-wsi`` (through ``.ci/install-system.sh``, which needs
root or sudo) when the converter or Orthanc is missing.

Usage: ``python benchmarks/setup_peers.py [--recreate] [--convert] [--no-system]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv-peers"
CONVERT_VENV = HERE / ".venv-convert"

# Installed one group at a time: a peer that fails to resolve must not keep the
# others out, because any subset of peers still yields a useful comparison.
GROUPS: list[tuple[str, list[str]]] = [
    ("base", ["numpy", "pillow"]),
    ("openslide", ["openslide-python", "openslide-bin"]),
    ("wsidicom", ["wsidicom"]),
    # 0.7.2 reads local folders only through dicomweb-client's DICOMfileClient.
    ("dicomslide-0.7.2", ["dicomslide==0.7.2", "dicomweb-client"]),
]
CONVERT_GROUPS: list[tuple[str, list[str]]] = [
    ("wsidicomizer", ["wsidicomizer", "tifffile", "imagecodecs"]),
]
# The 0.31 line needs a newer Python than some hosts have; 0.26 is the fallback.
FALLBACKS = {"wsidicomizer": ["wsidicomizer>=0.26,<0.27", "tifffile", "imagecodecs"]}
REPORT = [
    "numpy",
    "pillow",
    "openslide-python",
    "openslide-bin",
    "wsidicom",
    "dicomslide",
    "dicomweb-client",
    "highdicom",
    "pydicom",
    "wsidicomizer",
    "imagecodecs",
    "tifffile",
]


def venv_python(env: Path = VENV) -> Path:
    return env / "bin" / "python"


def pip(env: Path, *args: str) -> int:
    cmd = [str(venv_python(env)), "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def installed_versions(env: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        [str(venv_python(env)), "-c", code, *REPORT], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout)


def build(env: Path, groups: list[tuple[str, list[str]]], recreate: bool) -> dict[str, object]:
    if recreate and env.exists():
        shutil.rmtree(env)
    if not venv_python(env).exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(env)
    pip(env, "install", "-q", "--upgrade", "pip")
    failed = []
    for name, pkgs in groups:
        if pip(env, "install", "-q", *pkgs) != 0:
            fallback = FALLBACKS.get(name)
            if fallback is None or pip(env, "install", "-q", *fallback) != 0:
                failed.append(name)
    info = {"env": str(env), "versions": installed_versions(env), "failed": failed}
    (env / "peers.json").write_text(json.dumps(info))
    return info


def ensure_main_env() -> list[str]:
    """tifffile in this interpreter, the system packages; return what is still missing."""
    missing = []
    if importlib.util.find_spec("tifffile") is None:
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
        print("+", " ".join([*cmd, "tifffile"]), flush=True)
        if subprocess.call([*cmd, "tifffile"]) != 0:
            missing.append("tifffile")
    return missing


def ensure_system() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from tests.support.orthanc import find_dicomweb_plugin, find_orthanc

    def have() -> bool:
        converter = shutil.which("OrthancWSIDicomizer") or shutil.which(
            "OrthancWSIDicomizer", path="/usr/bin:/usr/local/bin"
        )
        return bool(converter and find_orthanc() and find_dicomweb_plugin())

    if have():
        return []
    script = ROOT / ".ci" / "install-system.sh"
    if script.exists():
        print(f"+ bash {script}", flush=True)
        subprocess.call(["bash", str(script)])
    return [] if have() else ["orthanc / orthanc-dicomweb / orthanc-wsi (apt)"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recreate", action="store_true", help="delete and rebuild the env(s)")
    ap.add_argument("--convert", action="store_true", help="also build .venv-convert")
    ap.add_argument("--no-system", action="store_true", help="do not run .ci/install-system.sh")
    args = ap.parse_args()
    missing = ensure_main_env()
    if not args.no_system:
        missing += ensure_system()
    infos = [build(VENV, GROUPS, args.recreate)]
    if args.convert:
        infos.append(build(CONVERT_VENV, CONVERT_GROUPS, args.recreate))
    report = {"python": sys.version.split()[0], "envs": infos, "missing": missing}
    print(json.dumps(report, indent=2))
    return 1 if missing or any(info["failed"] for info in infos) else 0


if __name__ == "__main__":
    sys.exit(main())
