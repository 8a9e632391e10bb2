"""Turn what a user typed (a published name, a JSON file, a genotype string) into a genotype."""

from __future__ import annotations

import json
from pathlib import Path

from evoray.errors import ConfigError
from evoray.spaces.genotype import Genotype, parse_genotype


def resolve_genotype(spec: str) -> Genotype:
    """A published name (``DARTS_V2``), a ``.json`` file (a genotype, or a result with a ``genotype`` field),
    or a genotype string (DARTS ``Genotype(...)`` form or an NB201 arch string)."""
    from evoray.spaces.published import published_genotype

    text = spec.strip()
    if not text:
        raise ConfigError("empty genotype; give a published name, a .json file or a genotype string")
    if text[0] in "|{" or text.startswith("Genotype("):
        return parse_genotype(text)
    if text.endswith(".json") or "/" in text:
        path = Path(text)
        if path.is_dir():
            found = [str(path / n) for n in ("best.json", "results.json") if (path / n).is_file()]
            hint = f"; its genotype is in {found[0]}" if found else ""
            raise ConfigError(f"genotype file {text!r} is a directory, not a .json file{hint}")
        if not path.is_file():
            raise ConfigError(f"genotype file {text!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"genotype file {text!r} is not valid JSON: {err}") from None
        if isinstance(data, dict) and "genotype" in data:
            data = data["genotype"]
        if isinstance(data, str):
            return parse_genotype(data)
        if isinstance(data, dict):
            return Genotype.from_json(data)
        raise ConfigError(f"genotype file {text!r} holds neither a genotype string nor a genotype object")
    return published_genotype(text)  # an unknown name raises an error listing the published names
