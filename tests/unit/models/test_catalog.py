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


def test_the_registry_registers_every_family_whichever_way_it_is_reached() -> None:
    """models.heads imports the registry directly: its first question still sees every family
    (a bench run --task det once found the registry empty when only models.catalog had loaded)."""
    code = ("from models.registry import list_models, model_family\n"
            "print(len(list_models()), model_family('pvt_tiny'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(MODEL_FAMILIES)), "pvt"]


def test_a_program_may_register_its_own_model_before_calling_bench() -> None:
    """timm's pattern: register_model in the caller's process, then bench's entry knows the name."""
    code = ("import torch.nn as nn\n"
            "from models.registry import register_model\n"
            "@register_model('toy')\n"
            "def toy_one(**kwargs):\n    return nn.Identity()\n"
            "from bench.config import parse_models\n"
            "print(parse_models('toy_one,resnet18'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['toy_one', 'resnet18']"
