"""ControlNet / T2I-Adapter in the engine: units (the API's records), preprocessors and the U-Net add-on."""
