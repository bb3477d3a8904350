"""Discovery of quantization schemes through the entry-point group ``kernelkit.quant``.

Built-in schemes are declared in kernelkit's own pyproject.toml exactly like third-party ones, so both take
the same path. Entry points are loaded lazily, one at a time, so a broken plugin only breaks itself.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from kernelkit.quant.scheme import QuantScheme

GROUP = "kernelkit.quant"


class SchemeError(LookupError):
    """An unknown scheme, a plugin that fails to load, or two plugins claiming one name."""


@dataclass(frozen=True)
class SchemeInfo:
    """One registered name: its entry points (more than one is a conflict) and where they come from."""

    name: str
    entry_points: tuple[importlib.metadata.EntryPoint, ...]

    @property
    def packages(self) -> str:
        return ", ".join(_describe(ep) for ep in self.entry_points)


def _describe(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else "?"
    return f"{ep.value} (package {dist})"


def _registered() -> dict[str, SchemeInfo]:
    by_name: dict[str, list] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep not in by_name.setdefault(ep.name, []):
            by_name[ep.name].append(ep)
    return {name: SchemeInfo(name, tuple(eps)) for name, eps in sorted(by_name.items())}


def list_schemes() -> list[SchemeInfo]:
    """Every registered scheme name with the entry point(s) and package(s) providing it."""
    return list(_registered().values())


def get_scheme(name: str) -> type[QuantScheme]:
    """The scheme class registered as ``name``.

    Raises:
        SchemeError: no such scheme (the message lists the known ones), two entry points claim the name, or
            the entry point fails to import or does not name a QuantScheme subclass called ``name``.
    """
    registered = _registered()
    info = registered.get(name)
    if info is None:
        raise SchemeError(f"unknown quantization scheme {name!r}; registered: {sorted(registered) or 'none'}")
    if len(info.entry_points) > 1:
        raise SchemeError(f"quantization scheme {name!r} is claimed by several entry points in group {GROUP!r}: "
                          f"{info.packages}; uninstall one of them")
    ep = info.entry_points[0]
    try:
        cls = ep.load()
    except Exception as e:  # a plugin can fail in any way on import; report which one
        raise SchemeError(f"quantization scheme {name!r} failed to load from entry point {_describe(ep)}: "
                          f"{type(e).__name__}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, QuantScheme)) or getattr(cls, "name", None) != name:
        raise SchemeError(f"entry point {_describe(ep)} for {name!r} is not a QuantScheme subclass named {name!r}")
    return cls


def scheme_from_config(quantization_config: dict) -> QuantScheme:
    """The registered scheme that reads this HF ``quantization_config`` (matched on ``quant_method``).

    Raises:
        SchemeError: no registered scheme accepts it (the message includes each candidate's objection).
    """
    method = quantization_config.get("quant_method")
    objections = []
    for info in list_schemes():
        try:
            cls = get_scheme(info.name)
        except SchemeError as e:
            objections.append(str(e))
            continue
        if cls.quant_method != method:
            continue
        try:
            return cls.from_config(quantization_config)
        except ValueError as e:
            objections.append(f"{info.name}: {e}")
    raise SchemeError(f"no registered quantization scheme reads quant_method {method!r}"
                      + (f" ({'; '.join(objections)})" if objections else ""))


def checkpoint_quantization_config(path: str | Path, config: dict) -> dict | None:
    """The quantization config of the HF checkpoint at ``path`` whose config.json is ``config``: its
    ``quantization_config``; else, for a format that describes itself in a file of its own instead
    (msModelSlim's ``quant_model_description.json``), what the registered scheme naming that file
    (``description_file``) reads from it; None for an unquantized checkpoint.

    Raises:
        ValueError: a description file its scheme cannot read.
    """
    if config.get("quantization_config"):
        return config["quantization_config"]
    for info in list_schemes():
        try:
            cls = get_scheme(info.name)
        except SchemeError:
            continue
        if cls.description_file and (Path(path) / cls.description_file).is_file():
            return cls.config_from_checkpoint(Path(path))
    return None
