"""Where a job's model components live while it runs (memory modes), and what a job does when memory runs out.

`settings.MemorySettings` (flags and options) -> `plan.plan_placement` (what stays on the compute device, what
moves per stage, what streams block by block) -> `placement.Placement` (moves the text encoders, the U-Net and
the VAE at the stage boundaries, once per job) and `oom` (free, retry once lower, else a clear error).
"""
