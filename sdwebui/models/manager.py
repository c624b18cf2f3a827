"""ModelManager: the list of checkpoints and VAEs, and the loaded models (load / switch / unload)."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from sdwebui.models import discovery
from sdwebui.models.dit.checkpoints import load_checkpoint
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.models.hashing import HashCache
from sdwebui.models.lease import LeaseLocks, ModelLease
from sdwebui.models.libraries import import_model_libraries
from sdwebui.models.loader import DevicePolicy, load_vae_file
from sdwebui.models.model import CheckpointInfo, LoadedModel
from sdwebui.models.patches import Patch, VaeOverride

log = logging.getLogger(__name__)

VAE_AUTOMATIC = "Automatic"
VAE_NONE = "None"
VAES_KEPT = 2  # standalone VAEs kept loaded, so a per-job VAE override does not re-read its file each job


class ModelManager:
    """Owns loaded checkpoints; keeps at most ``max_loaded`` in RAM (most recently used first).

    A new model is loaded completely before anything is evicted, so a failed load leaves the current model
    working (at the cost of briefly holding both).
    """

    def __init__(
        self,
        checkpoint_dirs: Sequence[Path],
        vae_dirs: Sequence[Path] = (),
        hash_cache_path: Path | None = None,
        policy: DevicePolicy | None = None,
        max_loaded: int = 1,
        extra_checkpoints: Sequence[Path] = (),
        include_default_dir: bool = True,
        hashes: HashCache | None = None,
        module_dirs: Sequence[Path] = (),
    ):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.checkpoint_dirs = [Path(d) for d in checkpoint_dirs]
        self.vae_dirs = [Path(d) for d in vae_dirs]
        self.module_dirs = [Path(d) for d in module_dirs]  # models/text_encoder (Flux / SD3 parts)
        self.extra_checkpoints = [Path(p) for p in extra_checkpoints]
        self.include_default_dir = include_default_dir
        self.policy = policy or DevicePolicy()
        self.max_loaded = max_loaded
        # one cache object per file: managers of several worker stacks share it (it writes the file)
        self.hashes = hashes or HashCache(hash_cache_path)
        self._lock = threading.RLock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # filename -> model, current last
        self._checkpoints: list[CheckpointInfo] = []
        self._vaes: list[discovery.VaeInfo] = []
        self._modules: list[discovery.ModelFile] = []
        self._vae_modules: OrderedDict[tuple, object] = OrderedDict()  # most recently used last
        self.leases = LeaseLocks()
        self.refresh()

    # ------------------------------------------------------------------------------------------- listing

    def refresh(self) -> None:
        """Re-scan the folders (new, removed, renamed files) without touching loaded models."""
        infos = discovery.list_checkpoints(
            self.checkpoint_dirs, self.extra_checkpoints, self.include_default_dir, linked_roots=self.vae_dirs
        )
        with_hashes = []
        for info in infos:
            cached = None if info.is_diffusers_folder else self.hashes.cached(info.path)
            with_hashes.append(self._with_hash(info, cached) if cached else info)
        vaes = discovery.list_vaes(self.vae_dirs, self.checkpoint_dirs)
        modules = discovery.list_model_files([*self.vae_dirs, *self.module_dirs], discovery.VAE_EXTENSIONS)
        with self._lock:
            self._checkpoints = with_hashes
            self._vaes = vaes
            self._modules = modules

    def checkpoints(self) -> list[CheckpointInfo]:
        return list(self._checkpoints)

    def vae_names(self) -> list[str]:
        return [VAE_AUTOMATIC, VAE_NONE] + [v.name for v in self._vaes]

    def vae_files(self) -> list[tuple[str, Path]]:
        """(name, path) of every standalone VAE file found, as A1111's /sdapi/v1/sd-vae lists them."""
        return [(v.name, v.path) for v in self._vaes]

    def module_files(self) -> list[tuple[str, Path]]:
        """(name, path) of the VAE and text encoder files a Flux / SD3 checkpoint may use (Forge's modules)."""
        return [(m.name, m.path) for m in self._modules]

    def module_paths(self, names: Sequence[str]) -> tuple[Path, ...]:
        """The listed module files of these names (file names as /sdapi/v1/sd-modules lists them)."""
        return tuple(
            discovery.find_listed(
                name, self._modules, discovery.ModelFile.names, "module", "forge_additional_modules"
            ).path
            for name in names
        )

    def find_checkpoint(self, name: str) -> CheckpointInfo:
        """By title, name, file name (with or without extension), listed path, or short/full hash; only
        what discovery listed (a path that was not listed is not found, whether it exists or not)."""
        try:
            return self._find_listed(name)
        except discovery.NotListedError:
            # a title with a hash that another manager sharing the hash cache (another worker stack)
            # recorded after this one listed the files: the cache knows it now
            if not self._take_cached_hashes():
                raise
            return self._find_listed(name)

    def _find_listed(self, name: str) -> CheckpointInfo:
        return discovery.find_listed(
            name, self._checkpoints, discovery.checkpoint_names, "checkpoint", "sd_model_checkpoint"
        )

    def _take_cached_hashes(self) -> bool:
        """Record the hashes the cache holds for listed files not hashed here yet (no file is read);
        whether there were any."""
        found = False
        for info in self.checkpoints():
            if not (info.sha256 or info.is_diffusers_folder):
                cached = self.hashes.cached(info.path)
                found = found or cached is not None
                self._record_hash(info, cached)
        return found

    def hash_of(self, info: CheckpointInfo) -> CheckpointInfo:
        """The info with its sha256 (hashing the file once; cached by path + mtime + size)."""
        if info.is_diffusers_folder or info.sha256:
            return info
        return self._record_hash(info, self.hashes.sha256(info.path))

    def _record_hash(self, info: CheckpointInfo, sha256: str | None) -> CheckpointInfo:
        if sha256 is None or info.sha256:
            return info
        hashed = self._with_hash(info, sha256)
        with self._lock:
            self._checkpoints = [hashed if i.filename == info.filename else i for i in self._checkpoints]
        return hashed

    @staticmethod
    def _with_hash(info: CheckpointInfo, sha256: str) -> CheckpointInfo:
        refreshed = discovery.checkpoint_info(info.path, sha256=sha256)
        return CheckpointInfo(
            path=info.path,
            name=info.name,
            title=f"{info.title.split(' [')[0]} [{sha256[:10]}]",
            filename=info.filename,
            sha256=sha256,
            is_diffusers_folder=info.is_diffusers_folder,
            config_path=refreshed.config_path,
        )

    # ------------------------------------------------------------------------------------------- loading

    @property
    def current(self) -> LoadedModel | None:
        with self._lock:
            return next(reversed(self._loaded.values()), None)

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._loaded.values())

    def load(
        self, name: str | CheckpointInfo, vae: str = VAE_AUTOMATIC, modules: Sequence[str] = ()
    ) -> LoadedModel:
        """Make ``name`` the current model (loading it if needed); raises CheckpointLoadError on bad input.
        `modules`: separate VAE / text encoder files for a Flux / SD3 checkpoint (a model loaded with other
        modules is loaded again with these)."""
        import_model_libraries()  # first imports under one lock (other threads may import them too)
        paths = self.module_paths(modules)
        with self._lock:
            if isinstance(name, CheckpointInfo) and name.filename in self._loaded:
                info = name
            else:  # an info object must also be one discovery listed
                info = self.find_checkpoint(name.filename if isinstance(name, CheckpointInfo) else name)
            cached = self._loaded.get(info.filename)
            if cached is not None and cached.is_dit and cached.extra.get("module_paths", ()) != paths:
                self._release(self._loaded.pop(info.filename))
                cached = None
            if cached is None:
                model, info = self._load_and_hash(info, paths)
                self._apply_vae(model, vae)
                self._loaded[info.filename] = model
                self.set_limit(self.max_loaded)  # evicts the least recently used beyond the limit
                log.info(
                    "Loaded %s (%s; %s)", info.title, model.family.value, model.extra.get("detection", "")
                )
                return model
            self._loaded.move_to_end(info.filename)
        if (cached.vae_name or VAE_NONE) != self._resolve_vae_name(info, vae):
            self._change_vae(cached, vae)
        return cached

    def set_limit(self, max_loaded: int) -> None:
        """Change how many checkpoints stay in RAM; the least recently used beyond it are freed now."""
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        with self._lock:
            self.max_loaded = max_loaded
            while len(self._loaded) > self.max_loaded:
                _, evicted = self._loaded.popitem(last=False)
                self._release(evicted)

    def unload(self, name: str | None = None) -> None:
        """Unload one model (default: the current one) and free its memory."""
        with self._lock:
            if name is None:
                if not self._loaded:
                    return
                key = next(reversed(self._loaded))
            else:
                key = self.find_checkpoint(name).filename
            model = self._loaded.pop(key, None)
        if model is not None:
            self._release(model)

    def unload_all(self) -> None:
        with self._lock:
            models = list(self._loaded.values())
            self._loaded.clear()
        for model in models:
            self._release(model)

    def set_vae(self, vae: str) -> LoadedModel | None:
        """Swap the current model's own VAE ("Automatic", "None" or a VAE name): a change of the shared
        model (the `sd_vae` setting), made once no other thread holds a lease of it."""
        model = self.current
        if model is not None:
            self._change_vae(model, vae)
        return model

    def _change_vae(self, model: LoadedModel, vae: str) -> None:
        # lock order: a lease's lock, then the manager's (a job holding a lease may load another model)
        with self.leases.lock_for(model):
            self._apply_vae(model, vae)

    # ------------------------------------------------------------------------------------------- leasing

    def lease(self, model: LoadedModel, vae: str | None = None, patches: Sequence[Patch] = ()) -> ModelLease:
        """A per-job lease of a loaded model (see sdwebui.models.lease): `vae` ("Automatic", "None" or a
        VAE name; None = the model's own) becomes a VaeOverride patch, applied before `patches`. Raises
        CheckpointLoadError (field sd_vae) for an unknown VAE, before anything is changed."""
        override = self.vae_patch(model, vae) if vae else None
        wanted = self._resolve_vae_name(model.info, vae) if vae else model.vae_name or VAE_NONE
        return ModelLease(
            model,
            [*([override] if override else []), *patches],
            lock=self.leases.lock_for(model),
            key=(wanted, *(id(p) for p in patches)),
        )

    def vae_patch(self, model: LoadedModel, vae: str) -> VaeOverride | None:
        """The patch giving `model` the VAE `vae`; None when it already has that one."""
        name = self._resolve_vae_name(model.info, vae)
        if name == (model.vae_name or VAE_NONE):
            return None
        if name == VAE_NONE:
            return VaeOverride(None, model.extra.get("own_vae", model.vae))
        path = self._vae_file(model.info, vae, name)
        return VaeOverride(name, self._vae_module(path, model), self._vae_hash(path))

    # ------------------------------------------------------------------------------------------- internals

    def _load_and_hash(
        self, info: CheckpointInfo, modules: tuple[Path, ...] = ()
    ) -> tuple[LoadedModel, CheckpointInfo]:
        """Load, hashing a not-yet-hashed file at the same time: the sha256 of a multi-GB file takes seconds,
        and hashlib and file reads release the GIL, so the first load of a file costs max(load, hash), not
        the sum. Later loads find the hash in the cache."""
        discovery.check_still_listable(info)
        needs_hash = not (info.is_diffusers_folder or info.sha256)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-hash") as pool:
            digest = pool.submit(self.hashes.sha256, info.path) if needs_hash else None
            model = load_checkpoint(info, self.policy, modules)
            if model.is_dit:
                model.extra["module_paths"] = modules
            try:
                info = self._record_hash(info, digest.result() if digest else None)
            except OSError as error:
                raise CheckpointLoadError(f"{info.filename}: unreadable: {error}") from None
        model.info = info
        return model, info

    def _resolve_vae_name(self, info: CheckpointInfo, vae: str) -> str:
        if vae == VAE_NONE:
            return VAE_NONE
        if vae == VAE_AUTOMATIC:
            found = discovery.automatic_vae(info, self._vaes)
            return found.name if found else VAE_NONE
        return vae

    def _vae_path(self, name: str) -> Path:
        return discovery.find_listed(name, self._vaes, discovery.ModelFile.names, "VAE", "sd_vae").path

    def _vae_file(self, info: CheckpointInfo, vae: str, name: str) -> Path:
        if vae == VAE_AUTOMATIC:
            found = discovery.automatic_vae(info, self._vaes)
            if found is not None:
                return found.path
        return self._vae_path(name)

    def _vae_module(self, path: Path, model: LoadedModel):
        """The VAE file loaded for `model`'s VAE config, device and dtype (kept for the next job)."""
        stat = path.stat()
        config = tuple(sorted((k, repr(v)) for k, v in dict(model.vae.config).items()))
        key = (str(path), stat.st_mtime_ns, stat.st_size, str(model.device), str(model.vae_dtype), config)
        with self._lock:
            module = self._vae_modules.get(key)
            if module is not None:
                self._vae_modules.move_to_end(key)
                return module
        module = load_vae_file(path, dict(model.vae.config), model.device, model.vae_dtype)
        with self._lock:
            self._vae_modules[key] = module
            while len(self._vae_modules) > VAES_KEPT:
                self._vae_modules.popitem(last=False)
        return module

    def _vae_hash(self, path: Path) -> str | None:
        # A1111's "VAE hash" of the infotext: the file's sha256, first 10 hex digits (cached like checkpoints')
        digest = self.hashes.sha256(path)
        return digest[:10] if digest else None

    def _apply_vae(self, model: LoadedModel, vae: str) -> None:
        """Set the shared model's own VAE (kept until the next change; the original stays in extra)."""
        name = self._resolve_vae_name(model.info, vae)
        if name == VAE_NONE:
            own = model.extra.get("own_vae")
            if own is not None:
                model.vae = own
            model.vae_name = None
            model.extra.pop("vae_hash", None)
            return
        path = self._vae_file(model.info, vae, name)
        new_vae = self._vae_module(path, model)
        model.extra.setdefault("own_vae", model.vae)
        model.vae = new_vae
        model.vae_name = name
        model.extra["vae_hash"] = self._vae_hash(path)

    @staticmethod
    def _release(model: LoadedModel) -> None:
        """Drop the modules so their memory can be reclaimed (callers must not keep references)."""
        model.extra.clear()
        model.unet = model.vae = None
        model.text_encoders = []
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
