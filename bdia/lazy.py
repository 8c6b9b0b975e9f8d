"""Lazy attributes for a package: its public names load their module on first use (PEP 562), so that
importing the package (and ``bdia --help``) does not import PyTorch."""

from __future__ import annotations

import importlib

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: dict[str, str], submodules=()):
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the submodule defining it;
    ``submodules`` are loaded when accessed as attributes."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        if name in submodules:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(submodules))

    return __getattr__, __dir__
