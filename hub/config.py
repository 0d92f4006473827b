"""Loading a hub's configuration file (memberhub.yaml): ``${ENV_VAR}`` secrets, and errors that name
the file, the line and the closest valid key."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from schemas import HubConfig
from schemas.errors import ConfigError

DEFAULT_CONFIG = Path("memberhub.yaml")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def hub_home() -> Path:
    """Where the embedded default keeps its database, Dagster instance and simulator state."""
    return Path(os.environ.get("MEMBERHUB_HOME", ".memberhub"))


def default_database_url() -> str:
    return os.environ.get("MEMBERHUB_DATABASE_URL") or f"sqlite:///{hub_home() / 'hub.db'}"


def load_config(path: Path | str | None = None) -> HubConfig:
    """Read and validate a configuration file. A missing default file means an empty hub."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        if path == DEFAULT_CONFIG:
            return HubConfig()
        raise ConfigError(f"{path}: no such configuration file")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    data = _expand(_to_python(root, path), path, root)
    try:
        return HubConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, root)) from None


def _to_python(node: yaml.Node | None, path: Path) -> Any:
    return yaml.safe_load(yaml.serialize(node)) if node is not None else None


def _expand(value: Any, path: Path, root: yaml.Node | None, trail: tuple[Any, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, path, root, (*trail, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path, root, (*trail, i)) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            line = _line_of(root, trail)
            raise ConfigError(
                f"{path}:{line}: {'.'.join(map(str, trail))} needs the environment variable {name}, "
                "which is not set; export it (secrets stay out of the file) or give a default as "
                f"${{{name}:-value}}"
            )

        return _ENV.sub(substitute, value)
    return value


def _node_at(root: yaml.Node | None, trail: tuple[Any, ...]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """The node at ``trail`` and the key node naming it (for a line number)."""
    node, key_node = root, None
    for step in trail:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(step):
                    node, key_node = v, k
                    break
            else:
                return node, key_node
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node, key_node = node.value[step], node.value[step]
        else:
            return node, key_node
    return node, key_node


def _line_of(root: yaml.Node | None, trail: tuple[Any, ...]) -> int:
    node, key_node = _node_at(root, trail)
    mark = (key_node or node).start_mark if (key_node or node) is not None else None
    return mark.line + 1 if mark else 1


def _fields_at(trail: tuple[Any, ...]) -> set[str]:
    """The valid keys of the model that the key at ``trail`` belongs to."""
    model: Any = HubConfig
    for step in trail[:-1]:
        if getattr(model, "__origin__", None) in (dict, list):
            model = model.__args__[-1]  # the step is a key or an index into the container
        elif isinstance(model, type) and issubclass(model, BaseModel) and str(step) in model.model_fields:
            model = model.model_fields[str(step)].annotation
        else:
            return set()
    return set(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else set()


def _explain(error: ValidationError, path: Path, root: yaml.Node | None) -> str:
    lines = [f"{path}: {error.error_count()} problem(s):"]
    for item in error.errors():
        trail = tuple(item["loc"])
        line = _line_of(root, trail)
        where = ".".join(map(str, trail)) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(trail[-1]), sorted(_fields_at(trail)), n=1, cutoff=0.5)
            message = f"unknown key {trail[-1]!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        elif item["type"] == "literal_error":
            close = difflib.get_close_matches(str(item.get("input")), _literal_choices(item), n=1, cutoff=0.4)
            message += f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"  {path}:{line}: {where}: {message}")
    return "\n".join(lines)


def _literal_choices(item: dict[str, Any]) -> list[str]:
    expected = str(item.get("ctx", {}).get("expected", ""))
    return re.findall(r"'([^']+)'", expected)
