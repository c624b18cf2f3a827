"""Speed and weight-size settings applied to a job's U-Net for the job: fp8 weight storage, channels-last."""
