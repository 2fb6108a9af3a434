"""Validation of ``workflow_config.yaml`` against the JSON schema in ``rules/schemas/``.

The schema is the single source of defaults: :func:`validate_config` fills them in for the whole
config (the Snakefile calls it), and :func:`section_settings` fills them in for one stage's settings
(the CLI calls it), so a stage run by hand behaves like the same stage run by Snakemake.

The schema is split into one file per section (``rules/schemas/<section>.schema.yaml``), joined by
``$ref`` from ``config.schema.yaml``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from affpipe.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "rules" / "schemas"
ROOT_SCHEMA = "config.schema.yaml"


def _retrieve(uri: str) -> Resource:
    name = uri.rsplit("/", 1)[-1]
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise ConfigError("schema file referenced by $ref not found", path=path)
    contents = dict(yaml.safe_load(path.read_text()))
    # Without its `$schema`, the referenced file is validated by our default-filling validator
    # class; with it, jsonschema would switch to the stock Draft7Validator and skip the defaults.
    contents.pop("$schema", None)
    return Resource.from_contents(contents, default_specification=DRAFT7)


@functools.lru_cache(maxsize=None)
def load_schema(name: str = ROOT_SCHEMA) -> dict[str, Any]:
    """Load one schema file from ``rules/schemas/``."""
    path = SCHEMA_DIR / name
    return yaml.safe_load(path.read_text())


def _extend_with_default(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if prop in instance:
                    continue
                if "default" in subschema:  # also read next to a $ref (draft 7 ignores it otherwise)
                    instance[prop] = copy.deepcopy(subschema["default"])
                elif "$ref" in subschema:
                    resolved = validator._resolver.lookup(subschema["$ref"]).contents
                    if "default" in resolved:
                        instance[prop] = copy.deepcopy(resolved["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_default(jsonschema.Draft7Validator)


def _validator(schema_name: str):
    schema = load_schema(schema_name)
    registry = Registry(retrieve=_retrieve)
    return _DefaultFillingValidator(schema, registry=registry)


def _format_error(err: jsonschema.ValidationError, prefix: str) -> str:
    where = ".".join(str(p) for p in err.absolute_path)
    key = f"{prefix}.{where}" if prefix and where else (prefix or where or "<top level>")
    return f"config key `{key}`: {err.message}"


def validate(instance: dict[str, Any], schema_name: str, *, prefix: str = "", source: str | None = None) -> dict[str, Any]:
    """Validate ``instance`` in place against one schema file, filling in defaults.

    Raises
    ------
    ConfigError
        Listing every violation, each naming the dotted config key.
    """
    validator = _validator(schema_name)
    # Two passes: the first fills defaults (which may create nested objects whose own defaults the
    # second pass then fills), the second reports errors on the completed instance.
    for _ in validator.iter_errors(instance):
        pass
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "; ".join(_format_error(e, prefix) for e in errors)
        raise ConfigError(f"invalid configuration: {lines}", path=source)
    return instance


def validate_config(config: dict[str, Any], *, source: str | None = "workflow_config.yaml") -> dict[str, Any]:
    """Validate the whole workflow config in place and fill in defaults."""
    return validate(config, ROOT_SCHEMA, source=source)


def section_settings(section: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of one stage's settings (``rules/schemas/<section>.schema.yaml``) merged with ``settings``."""
    instance = copy.deepcopy(settings or {})
    return validate(instance, f"{section}.schema.yaml", prefix=section)
