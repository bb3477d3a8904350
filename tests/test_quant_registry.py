"""The scheme registry: built-ins through entry points, and clear errors for unknown, broken and
conflicting plugins without breaking the built-ins."""

import importlib.metadata

import pytest

from kernelkit.quant import SchemeError, get_scheme, list_schemes, registry
from kernelkit.quant.fp8_block.scheme import Fp8BlockScheme

BUILTIN = importlib.metadata.EntryPoint("fp8-block", "kernelkit.quant.fp8_block.scheme:Fp8BlockScheme",
                                        registry.GROUP)


@pytest.fixture
def plugins(monkeypatch):
    """Install fake entry points next to the built-in one."""

    def install(*extra):
        eps = [BUILTIN, *(importlib.metadata.EntryPoint(n, v, registry.GROUP) for n, v in extra)]
        monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: eps)

    return install


def test_builtin_is_registered_through_its_entry_point():
    assert get_scheme("fp8-block") is Fp8BlockScheme
    info = {s.name: s for s in list_schemes()}["fp8-block"]
    assert "kernelkit.quant.fp8_block.scheme:Fp8BlockScheme" in info.packages and "package kernelkit" in info.packages


def test_unknown_name_lists_known_schemes():
    with pytest.raises(SchemeError, match=r"unknown quantization scheme 'int3'.*fp8-block"):
        get_scheme("int3")


def test_broken_plugin_names_its_entry_point_and_spares_the_builtins(plugins):
    plugins(("int4-broken", "no_such_package.schemes:Int4"))
    with pytest.raises(SchemeError, match=r"'int4-broken' failed to load.*no_such_package.*ModuleNotFoundError"):
        get_scheme("int4-broken")
    assert get_scheme("fp8-block") is Fp8BlockScheme
    assert [s.name for s in list_schemes()] == ["fp8-block", "int4-broken"]


def test_two_plugins_claiming_one_name(plugins):
    plugins(("fp8-block", "other_plugin:Fp8"))
    with pytest.raises(SchemeError, match=r"claimed by several entry points.*Fp8BlockScheme.*other_plugin:Fp8"):
        get_scheme("fp8-block")


def test_entry_point_must_name_a_matching_scheme_class(plugins):
    plugins(("fp8-alias", "kernelkit.quant.fp8_block.scheme:Fp8BlockScheme"), ("not-a-class", "os.path:join"))
    with pytest.raises(SchemeError, match="not a QuantScheme subclass named 'fp8-alias'"):
        get_scheme("fp8-alias")
    with pytest.raises(SchemeError, match="not a QuantScheme subclass"):
        get_scheme("not-a-class")
