"""One line per invalid config: the first bad key, the problem and the valid values."""

from __future__ import annotations

from typing import Literal, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

from engine.config.data import CcxtData, FilesData, SyntheticData
from engine.core.urls import url_has_credentials


def _num(x: object) -> str:
    """Return a bound as people write it: 1e+15, not 1000000000000000.0."""
    return f"{x:g}" if isinstance(x, float) and abs(x) >= 1e6 else str(x)


def _allowed(model: type[BaseModel], field: str) -> str:
    """Human description of a field's valid values from its annotation and constraints."""
    info = model.model_fields.get(field)
    if info is None:
        return ""
    bounds = []
    for meta in info.metadata:
        if isinstance(meta, Gt):
            bounds.append(f"> {_num(meta.gt)}")
        elif isinstance(meta, Ge):
            bounds.append(f">= {_num(meta.ge)}")
        elif isinstance(meta, Lt):
            bounds.append(f"< {_num(meta.lt)}")
        elif isinstance(meta, Le):
            bounds.append(f"<= {_num(meta.le)}")
    ann = info.annotation
    if getattr(ann, "__origin__", None) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ""
    text = str(ann).replace("typing.", "").replace(" | None", "").replace("<class '", "").replace("'>", "")
    words = {
        "float": "a finite number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a string",
        "date": "a date (YYYY-MM-DD)",
        "datetime.date": "a date (YYYY-MM-DD)",
        "list[str]": "a list of strings",
    }
    if text not in words:
        return ""  # a nested model, a union or a mapping: the message itself says what is wrong
    return f"{words[text]} {' and '.join(bounds)}".strip()


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[type[BaseModel] | None, str]:
    """Return the pydantic model that owns the field at ``loc`` (below ``root``) and the field's name."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            break
        if part in ("synthetic", "ccxt", "files") and model is root:
            continue
        info = model.model_fields.get(str(part))
        target = info.annotation if info else None
        args = [a for a in getattr(target, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = target if isinstance(target, type) and issubclass(target, BaseModel) else (args[0] if args else None)
    for choice in (SyntheticData, CcxtData, FilesData):
        if len(loc) > 1 and loc[1] == choice.model_fields["source"].default:
            model = choice if loc[0] == "data" else model
    return model, str(loc[-1])


def message_of(exc: ValidationError, root: type[BaseModel]) -> str:
    """One line naming the first bad key of a ``root`` model's validation, the problem and the valid values."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if p not in ("synthetic", "ccxt", "files"))
    key = ".".join(str(p) for p in loc) or "config"
    text = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "finite_number":
        text = "not a finite number (inf and nan are not allowed)"
    if not err["loc"] or (err["type"] == "value_error" and isinstance(err.get("input"), dict)):
        # a model-level rule: its message names the keys and values itself
        return f"invalid config: {text}"
    model, field = _model_at(tuple(err["loc"]), root)
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"invalid config value {key}.source={ctx.get('tag')!r}: allowed: one of {ctx.get('expected_tags')}"
    if err["type"] == "dict_type":
        return (
            f"invalid config value {key}={err.get('input')!r}: {text} (allowed: a mapping such as {{name: value, ...}})"
        )
    if err["type"] == "extra_forbidden":
        valid = sorted(model.model_fields) if model else []
        return f"unknown config key '{key}': valid keys here are {', '.join(valid)}"
    allowed = _allowed(model, field) if model else ""
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    if isinstance(value, str) and url_has_credentials(value):
        shown = ""  # issue 16: never echo credentials typed into a storage URL
    if err["type"] == "value_error":  # a validator's own message says what is allowed
        allowed = ""
    if err["type"] == "list_type" and isinstance(value, str):
        text = f"a list is needed: write '{key}=[{value}]'"
    hint = f" (allowed: {allowed})" if allowed else ""
    return f"invalid config value {key}{shown}: {text}{hint}"
