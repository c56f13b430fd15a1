"""YAML loading with YAML 1.2 floats.

PyYAML follows YAML 1.1, where `1e-4` (no dot) is a *string*: `lr: 1e-4` in a config, or
`--set train.lr=2e-3`, would then be refused as "expected a number". This loader also reads
exponent floats without a dot (`1e-4`, `3E5`, `+2e-3`) as floats; everything else is safe_load.
"""

from __future__ import annotations

import re

import yaml


class Loader(yaml.SafeLoader):
    pass


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load(stream):
    """yaml.safe_load with YAML 1.2 exponent floats (`1e-4` -> 0.0001)."""
    return yaml.load(stream, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
