"""The repository layout of DESIGN.md §3: only ``pararnn_ts`` is importable."""

from __future__ import annotations

from pathlib import Path

from conftest import read_pyproject
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_plain_folders_are_not_packages():
    for folder in ("kernels", "models", "datasets", "experiments"):
        assert not list((ROOT / folder).rglob("__init__.py")), f"{folder}/ must not contain __init__.py"


def test_only_pararnn_ts_is_packaged():
    packages = find_packages(str(ROOT), include=["pararnn_ts*"])
    assert "pararnn_ts" in packages
    assert {p.split(".")[0] for p in find_packages(str(ROOT), exclude=["tests*"])} == {"pararnn_ts"}


def test_pyproject_lists_every_package_and_ships_kernel_sources():
    config = read_pyproject()["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["pararnn_ts*"]))
    # kernels/ and each of its folders are packages of their own (setuptools ships no data of unlisted folders)
    kernel_packages = {"pararnn_ts._kernels"} | {
        f"pararnn_ts._kernels.{p.name}" for p in (ROOT / "kernels").iterdir() if p.is_dir()
    }
    assert set(config["packages"]) == found | kernel_packages, "update [tool.setuptools] packages"
    assert config["package-dir"]["pararnn_ts._kernels"] == "kernels"
    sources = [p.relative_to(ROOT / "kernels") for p in (ROOT / "kernels").rglob("*") if p.is_file()]
    data = config["package-data"]
    unshipped = [
        str(p) for p in sources if not any(Path(p.name).match(pattern) for pattern in data.get(package_of(p), []))
    ]
    assert not unshipped, f"kernel sources missing from package-data: {unshipped}"


def package_of(source: Path) -> str:
    """The package of a file of ``kernels/`` (its path relative to that folder)."""
    return ".".join(("pararnn_ts._kernels", *source.parent.parts))


def test_built_wheel_carries_the_kernel_sources(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy: setuptools leaves build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    source.mkdir()
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "runs", "lightning_logs", "__pycache__")
    for item in ("pyproject.toml", "README.md", "pararnn_ts", "kernels"):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy
        copy(ROOT / item, source / item, **({"ignore": skip} if (ROOT / item).is_dir() else {}))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("pararnn_ts-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT / "kernels") for p in (ROOT / "kernels").rglob("*") if p.is_file()]
    missing = [str(p) for p in sources if f"pararnn_ts/_kernels/{p.as_posix()}" not in names]
    assert sources and not missing, f"wheel lacks kernel sources: {missing}"


def test_source_distribution_carries_the_tests_and_configs(tmp_path):
    import shutil
    import subprocess
    import sys
    import tarfile

    source = tmp_path / "src"  # a copy without what a working tree gathers (runs, builds, caches)
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "runs", "lightning_logs", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    build = "import sys, setuptools.build_meta as backend; backend.build_sdist(sys.argv[1])"
    subprocess.run([sys.executable, "-c", build, str(tmp_path)], check=True, capture_output=True, cwd=source)
    (sdist,) = tmp_path.glob("pararnn_ts-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    wanted = {"LICENSE", "Makefile", "pyproject.toml", "README.md"} | {
        p.relative_to(source).as_posix()
        for folder in ("tests", "models", "datasets", "experiments", "kernels", "pararnn_ts")
        for p in (source / folder).rglob("*")
        if p.is_file() and p.suffix != ".png"
    }
    assert not wanted - names, f"the sdist lacks {sorted(wanted - names)[:10]}: see MANIFEST.in"
    assert not [name for name in names if name.endswith(".png")]


def test_the_floors_ci_installs_are_the_lower_bounds_of_pyproject():
    """``tests/floors.txt`` pins each package to the lowest version ``pyproject.toml`` allows (``make floors``)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = read_pyproject()["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    lower = {}
    for requirement in map(Requirement, declared):
        bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
        lower.setdefault(requirement.name, set()).update(bounds)
    lines = (ROOT / "tests" / "floors.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert pins
    for pin in pins:
        (spec,) = pin.specifier
        assert spec.operator == "==" and lower.get(pin.name) == {Version(spec.version)}, (pin, lower.get(pin.name))
