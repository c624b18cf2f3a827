"""Shared fixtures: a network guard for the whole run, tiny models of every family, on-disk checkpoints."""

from __future__ import annotations

import copy
import ipaddress
import socket
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.browser")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sdwebui.models.model import ModelFamily  # noqa: E402
from tests import tiny_models  # noqa: E402

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


class NetworkAccessError(RuntimeError):
    """A test tried to reach a non-loopback address (e.g. a model hub)."""


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%")[0]
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _check_address(address: object) -> None:
    if isinstance(address, tuple) and address and not _is_loopback(address[0]):
        raise NetworkAccessError(f"network access blocked in tests: connection to {address!r}")


@pytest.fixture(scope="session", autouse=True)
def block_network():
    """Any non-loopback connection or name lookup raises; loopback (test servers, browsers) still works."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        _check_address(address)
        return original_connect(self, address)

    def guarded_connect_ex(self, address):
        _check_address(address)
        return original_connect_ex(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkAccessError(f"network access blocked in tests: name lookup of {host!r}")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect = original_connect
        socket.socket.connect_ex = original_connect_ex
        socket.getaddrinfo = original_getaddrinfo


@pytest.fixture(scope="session")
def _tiny_model_cache():
    return {}


def _tiny(cache: dict, family: ModelFamily):
    # Built once per session; each test gets its own deep copy so mutations never leak between tests.
    if family not in cache:
        cache[family] = tiny_models.tiny_loaded_model(family, seed=0)
    return copy.deepcopy(cache[family])


@pytest.fixture
def tiny_model_factory(_tiny_model_cache):
    """Call with a ModelFamily (or its value) to get a fresh tiny LoadedModel."""
    return lambda family: _tiny(_tiny_model_cache, ModelFamily(family))


@pytest.fixture
def tiny_sd1_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SD1)


@pytest.fixture
def tiny_sd1_inpaint_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SD1_INPAINT)


@pytest.fixture
def tiny_sd2_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SD2)


@pytest.fixture
def tiny_sd2v_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SD2_V)


@pytest.fixture
def tiny_sdxl_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SDXL)


@pytest.fixture
def tiny_sdxl_refiner_model(_tiny_model_cache):
    return _tiny(_tiny_model_cache, ModelFamily.SDXL_REFINER)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory, _tiny_model_cache):
    """A models/Stable-diffusion-like folder with tiny sd1/sd2-v/sdxl checkpoints (.safetensors + sidecars)."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    for family in (ModelFamily.SD1, ModelFamily.SD2_V, ModelFamily.SDXL):
        model = _tiny(_tiny_model_cache, family)
        tiny_models.write_single_file(model, root / f"tiny-{family.value}.safetensors")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run faster on one thread: thread hand-off costs more than their small ops."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
