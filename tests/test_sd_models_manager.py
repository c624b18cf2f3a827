import gc
import json
import weakref

import pytest

from sdwebui.models import discovery
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.hashing import HashCache, sha256_file
from sdwebui.models.manager import ModelManager
from sdwebui.models.model import ModelFamily
from tests import tiny_models


@pytest.fixture
def models_dir(tmp_path, tiny_model_factory):
    root = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(tiny_model_factory("sd1"), root / "a-sd1.safetensors")
    tiny_models.write_single_file(tiny_model_factory("sdxl"), root / "sub" / "b-sdxl.safetensors")
    return root


def _manager(tmp_path, models_dir, **kw):
    return ModelManager(
        [models_dir], [tmp_path / "models" / "VAE"], tmp_path / "cache.json", include_default_dir=False, **kw
    )


def test_discovery_and_refresh(tmp_path, models_dir, tiny_model_factory):
    manager = _manager(tmp_path, models_dir)
    assert [c.name for c in manager.checkpoints()] == ["a-sd1", "sub/b-sdxl"]
    tiny_models.write_diffusers_folder(tiny_model_factory("sd1"), models_dir / "c-folder")
    manager.refresh()
    names = [c.name for c in manager.checkpoints()]
    assert names == ["a-sd1", "c-folder", "sub/b-sdxl"]


def test_default_dir_is_listed_after_user_models(tmp_path, models_dir):
    infos = discovery.list_checkpoints([models_dir], include_default=True)
    assert [i.name for i in infos][:2] == ["a-sd1", "sub/b-sdxl"]
    assert discovery.DEFAULT_MODEL_DIR.parts[-2:] == ("models", "default")


def test_hash_is_a1111_style_and_cached(tmp_path, models_dir, monkeypatch):
    manager = _manager(tmp_path, models_dir)
    model = manager.load("a-sd1")
    path = models_dir / "a-sd1.safetensors"
    assert model.info.sha256 == sha256_file(path)
    assert model.info.title == f"a-sd1.safetensors [{model.info.sha256[:10]}]"
    assert json.loads((tmp_path / "cache.json").read_text())["hashes"][str(path.resolve())]["sha256"]
    monkeypatch.setattr("sdwebui.models.hashing.sha256_file", lambda p: pytest.fail("re-hashed"))
    assert HashCache(tmp_path / "cache.json").sha256(path) == model.info.sha256
    assert manager.find_checkpoint(model.info.sha256[:10]).name == "a-sd1"


def test_switch_keeps_n_and_unload_frees(tmp_path, models_dir):
    manager = _manager(tmp_path, models_dir, max_loaded=1)
    first = manager.load("a-sd1")
    ref = weakref.ref(first.unet)
    del first
    second = manager.load("sub/b-sdxl")
    assert manager.current is second and second.family == ModelFamily.SDXL
    gc.collect()
    assert ref() is None and len(manager.loaded()) == 1
    manager2 = _manager(tmp_path, models_dir, max_loaded=2)
    a, b = manager2.load("a-sd1"), manager2.load("sub/b-sdxl")
    assert manager2.load("a-sd1") is a and len(manager2.loaded()) == 2
    ref_b = weakref.ref(b.unet)
    del b
    manager2.unload("sub/b-sdxl")
    gc.collect()
    assert ref_b() is None and manager2.current is a


def test_lowering_the_limit_frees_the_least_recently_used(tmp_path, models_dir):
    manager = _manager(tmp_path, models_dir, max_loaded=2)
    older = manager.load("a-sd1")
    newer = manager.load("sub/b-sdxl")
    ref_older = weakref.ref(older.unet)
    del older
    manager.set_limit(1)
    gc.collect()
    assert ref_older() is None and manager.loaded() == [newer]
    with pytest.raises(ValueError, match=">= 1"):
        manager.set_limit(0)


def test_failed_load_keeps_previous_model(tmp_path, models_dir):
    (models_dir / "broken.safetensors").write_text("not a model")
    manager = _manager(tmp_path, models_dir)
    good = manager.load("a-sd1")
    with pytest.raises(CheckpointLoadError, match="broken.safetensors"):
        manager.load("broken")
    assert manager.current is good and good.unet is not None
    with pytest.raises(CheckpointLoadError, match="not found"):
        manager.load("nope")


def test_vae_selection(tmp_path, models_dir):
    vae_dir = tmp_path / "models" / "VAE"
    other = tiny_models.tiny_loaded_model("sd1", seed=3).vae
    tiny_models.write_vae_file(other, vae_dir / "custom.safetensors")
    tiny_models.write_vae_file(other, models_dir / "a-sd1.vae.pt")
    manager = _manager(tmp_path, models_dir)
    assert manager.vae_names() == ["Automatic", "None", "custom.safetensors", "a-sd1.vae.pt"]
    model = manager.load("a-sd1")  # Automatic -> the same-named .vae.pt
    assert model.vae_name == "a-sd1.vae.pt"
    w = other.decoder.conv_out.weight
    assert (model.vae.decoder.conv_out.weight == w).all()
    manager.set_vae("None")
    assert model.vae_name is None and not (model.vae.decoder.conv_out.weight == w).all()
    manager.set_vae("custom.safetensors")
    assert model.vae_name == "custom.safetensors" and (model.vae.decoder.conv_out.weight == w).all()


def test_first_load_hashes_while_loading(tmp_path, models_dir, monkeypatch):
    import threading

    from sdwebui.models import manager as manager_module

    loading = threading.Event()
    seen = {}
    real_load = manager_module.load_checkpoint

    def load(info, policy, *modules):
        loading.set()
        return real_load(info, policy, *modules)

    def slow_hash(path):
        seen["thread"] = threading.current_thread().name
        seen["overlapped"] = loading.wait(timeout=10)  # only true if the load started before the hash ended
        return sha256_file(path)

    manager = _manager(tmp_path, models_dir)
    monkeypatch.setattr(manager_module, "load_checkpoint", load)
    monkeypatch.setattr(manager.hashes, "sha256", slow_hash)
    model = manager.load("a-sd1")
    assert seen == {"thread": seen["thread"], "overlapped": True} and seen["thread"].startswith("model-hash")
    assert model.info.sha256 == sha256_file(models_dir / "a-sd1.safetensors")
    assert manager.find_checkpoint("a-sd1").sha256 == model.info.sha256


def test_unreadable_file_during_hashing_is_a_load_error(tmp_path, models_dir, monkeypatch):
    manager = _manager(tmp_path, models_dir)

    def broken(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(manager.hashes, "sha256", broken)
    with pytest.raises(CheckpointLoadError, match="a-sd1.safetensors: unreadable"):
        manager.load("a-sd1")
    assert manager.current is None
