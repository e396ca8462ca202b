"""Validate the workflow configuration against its JSON schema, with messages naming the key."""

import difflib
from importlib.resources import files
from typing import Any

import jsonschema
import yaml

SCHEMA: dict[str, Any] = yaml.safe_load(files("armor").joinpath("config.schema.yaml").read_text())
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)  # 2.0e4 is no iteration count
    ),
)


class ConfigError(ValueError):
    """The configuration breaks the schema; the message lists every problem by key."""


def _key(path: Any) -> str:
    """A config key path as dotted text, e.g. calibration.mode.wanda."""
    return ".".join(str(p) for p in path) or "<top level>"


def nearest(word: str, choices: list[str]) -> str:
    """'; nearest: a, b' naming the choices closest to a misspelt word, or ''."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"; nearest: {', '.join(close)}" if close else ""


def _describe(error: jsonschema.ValidationError, noun: str = "config key") -> str:
    """One line naming the key, the bad value and what is allowed."""
    where = f"{noun} '{_key(error.absolute_path)}'"
    schema = error.schema
    if error.validator == "enum":
        allowed = list(map(str, schema["enum"]))
        near = nearest(error.instance, allowed) if isinstance(error.instance, str) else ""
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(allowed)}{near}"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(schema.get('properties', {}))}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "oneOf":
        choices = [" ".join(alt.get("required", [])) for alt in error.validator_value]
        return f"{where}: set exactly one of {', '.join(choices)}"
    if error.validator == "pattern" and isinstance(error.instance, str):
        if "description" in schema:
            return f"{where}: {error.instance!r} is not {schema['description']}"
        return f"{where}: name {error.instance!r} must match {schema['pattern']}"
    if error.validator == "type" and "description" in schema:
        return f"{where}: {error.message} ({schema['description']})"
    return f"{where}: {error.message}"


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema itself, or the definition its $ref points to."""
    ref = schema.get("$ref")
    return SCHEMA["$defs"][ref.rsplit("/", 1)[1]] if ref else schema


def _fill_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Insert schema defaults for missing keys of objects, recursively."""
    schema = _resolve(schema)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub)
        if key not in instance and "default" in sub:
            instance[key] = sub["default"] if not isinstance(sub["default"], (dict, list)) else type(sub["default"])(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def check_options(options: dict[str, Any], section: str, extra: dict[str, Any]) -> None:
    """Check a mapping against one config section's schema plus `extra` properties; ValueError naming each bad option."""
    schema = dict(_resolve(SCHEMA["properties"][section]))
    schema["properties"] = schema["properties"] | extra
    errors = sorted(Validator(schema).iter_errors(options), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ValueError(f"invalid {section} options:\n  " + "\n  ".join(_describe(e, "option") for e in errors))


METHODS = SCHEMA["$defs"]["method"]["enum"]
SECTIONS = ("armor", "sparsegpt")  # methods with a settings section; the others take no settings


def _not_allowed(key: str, value: str, allowed: list[str]) -> str:
    """One line naming a key whose value is not one of `allowed`, and the nearest allowed ones."""
    return f"config key '{key}': {value!r} is not allowed; allowed values: {', '.join(allowed)}{nearest(value, allowed)}"


def _name_problems(config: dict[str, Any]) -> list[str]:
    """Method names that are neither a method nor a variant, bad variant settings, mode keys naming no pruned method."""
    variants = config["variants"]
    names = METHODS + list(variants)
    problems = [_not_allowed(f"methods.{i}", name, names) for i, name in enumerate(config["methods"]) if name not in names]
    for name, spec in variants.items():
        if spec["settings"] and spec["method"] not in SECTIONS:
            problems.append(f"config key 'variants.{name}.settings': {spec['method']} takes no settings")
        elif spec["settings"]:
            try:
                check_options(spec["settings"], spec["method"], {})
            except ValueError as err:
                problems += [f"variants.{name}.settings: {line.strip()}" for line in str(err).splitlines()[1:]]
    pruned = [m for m in METHODS if m != "dense"] + list(variants)
    problems += [_not_allowed("calibration.mode", key, pruned) for key in config["calibration"]["mode"] if key not in pruned]
    return problems


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check `config` against the schema, fill defaults in place, and return it; ConfigError if bad."""
    validator = Validator(SCHEMA)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _fill_defaults(config, SCHEMA)
    if problems := _name_problems(config):
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    evaluation = config["evaluation"]
    evaluation.setdefault("snapshot_dataset", next(iter(evaluation["datasets"])))
    if evaluation["snapshot_dataset"] not in evaluation["datasets"]:
        raise ConfigError(
            f"invalid configuration:\n  evaluation.snapshot_dataset: {evaluation['snapshot_dataset']!r} is not one of the "
            f"evaluation datasets {sorted(evaluation['datasets'])}"
        )
    return config
