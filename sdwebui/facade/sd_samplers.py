"""A1111's `modules.sd_samplers` for extensions: the sampler list and name lookups, over `sdwebui.engine.samplers`."""

from __future__ import annotations

from typing import Any

from sdwebui.engine import samplers as _samplers
from sdwebui.facade import sd_samplers_kdiffusion
from sdwebui.facade.sd_samplers_common import SamplerData


def _data(info: Any) -> SamplerData:
    return SamplerData(
        info.name, sd_samplers_kdiffusion.constructor_for(info.name), list(info.aliases), dict(info.options)
    )


all_samplers: list[SamplerData] = [_data(s) for s in _samplers.SAMPLERS if s.available]
all_samplers_map: dict[str, SamplerData] = {s.name: s for s in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map: dict[str, str] = {}
for _sampler in all_samplers:
    samplers_map[_sampler.name.lower()] = _sampler.name
    for _alias in _sampler.aliases:
        samplers_map[_alias.lower()] = _sampler.name


def create_sampler(name: str, model: Any) -> Any:
    """A1111's: the sampler object of `all_samplers_map[name]` (an extension may have registered its own
    entry there), built by its constructor, with `config` set. An unknown name is an error, as A1111's."""
    config = all_samplers_map.get(name) or find_sampler_config(name)
    if config is None:
        raise ValueError(f"bad sampler name: {name}")
    if config.constructor is None:
        raise ValueError(f"sampler {name}: its SamplerData has no constructor")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def visible_sampler_names() -> list[str]:
    return [s.name for s in all_samplers]


def find_sampler_config(name: str) -> SamplerData | None:
    """The sampler by name or alias; None when unknown (A1111 behaviour)."""
    try:
        info, _ = _samplers.resolve_sampler(name)
    except Exception:
        return None
    return all_samplers_map.get(info.name)


def get_sampler_and_scheduler(
    sampler_name: str, scheduler_name: str | None, *, convert_automatic: bool = True
):
    info, schedule = _samplers.resolve_sampler(sampler_name, scheduler_name)
    return info.name, schedule


def visible_scheduler_labels() -> list[str]:
    """Schedule type labels ("Automatic", "Karras", ...) usable here (ours; A1111 has sd_schedulers)."""
    return [s.label for s in _samplers.SCHEDULE_TYPES if s.available]


def find_scheduler_label(name: str) -> str | None:
    """The schedule type's label for a name, label or alias; None when unknown."""
    try:
        info = _samplers.find_schedule_type(name)
    except Exception:
        return None
    return info.label if info.available else None
