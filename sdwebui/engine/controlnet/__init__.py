"""ControlNet built in (sd-webui-controlnet's contracts): models, units, preprocessors, reference / IP-Adapter."""
