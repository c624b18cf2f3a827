"""A1111-compatible HTTP API (/sdapi/v1, /internal/progress) over the shared job queue."""
