"""models.catalog (the names, no torch) is the registry's list, and naming a model costs no import."""
from __future__ import annotations

import subprocess
import sys

import models
from models.catalog import MODEL_FAMILIES


def test_the_catalog_is_the_registry() -> None:
    assert MODEL_FAMILIES == {name: models.model_family(name) for name in models.list_models()}


def test_refusing_a_model_name_imports_neither_torch_nor_timm() -> None:
    """`bench run --models typo` is refused from the catalog, before torch, timm and the data
    loaders load (a refusal took 4.8 s when it imported them; about 0.3 s now)."""
    code = ("import sys\n"
            "from bench.config import parse_models\n"
            "from bench.errors import BadInput\n"
            "try:\n    parse_models('resnet18,nope')\nexcept BadInput as e:\n    print(e.message)\n"
            "print(sorted(m for m in ('torch', 'timm', 'PIL', 'bench.data.common') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    message, loaded = out.splitlines()
    assert message.startswith("unknown model 'nope'; known models: convnext_t, pvt_large"), message
    assert loaded == "[]", loaded
