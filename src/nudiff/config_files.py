"""The configs shipped inside the package (``nudiff/configs/*.yaml`` and the paper-scale ones in
``nudiff/configs/paper/``), found by name (``mnist32``, ``paper/edm_cifar10``)."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_names() -> list[str]:
    """Names of the packaged configs (``quickstart``, ``mnist32``, ..., ``paper/edm_cifar10``)."""
    paper = [f"paper/{p.stem}" for p in (CONFIG_DIR / "paper").glob("*.yaml")]
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) + sorted(paper)


def config_path(config: str | Path) -> Path:
    """``config`` as a file: an existing path, else the packaged config of that name (with or
    without ``.yaml``), else a ``FileNotFoundError`` that lists the packaged names."""
    path = Path(config)
    if path.is_file():
        return path
    packaged = (
        CONFIG_DIR / path.parent / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    )
    if path.parent in (Path("."), Path("paper")) and packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"config file not found: {config} (nor a packaged config of that name: "
        f"{', '.join(config_names())})"
    )
