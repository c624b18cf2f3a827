"""Jobs/s of the API under 16 concurrent clients x 2 txt2img requests each (the issue's concurrency scenario).

Starts `app.py --api --nowebui` on a free port with a tiny random SD1 checkpoint (64x64, 2 steps, CPU), so the
number measures queue + HTTP + engine overhead, not a real model. The server runs torch on one thread (see
tests/api_server.start_server); `--threads N` changes that, `--threads 0` keeps torch's default.
Usage: python benchmarks/api_throughput.py [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import tiny_models  # noqa: E402
from tests.api_server import start_server  # noqa: E402

CLIENTS, REQUESTS_EACH = 16, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (0: default)")
    threads = parser.parse_args().threads or None
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        folder = data_dir / "models" / "Stable-diffusion"
        folder.mkdir(parents=True)
        tiny_models.write_single_file(tiny_models.tiny_loaded_model("sd1"), folder / "tiny.safetensors")
        with start_server(data_dir, ["--use-cpu", "all"], torch_threads=threads) as server:
            body = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}
            requests.post(server.api + "/txt2img", json=body, timeout=300).raise_for_status()  # warm-up/load

            def client(n: int) -> int:
                for k in range(REQUESTS_EACH):
                    r = requests.post(server.api + "/txt2img", json={**body, "seed": n * 10 + k}, timeout=600)
                    r.raise_for_status()
                return REQUESTS_EACH

            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                done = sum(pool.map(client, range(CLIENTS)))
            elapsed = time.perf_counter() - start
    print(
        f"{done} jobs from {CLIENTS} clients in {elapsed:.2f} s: {done / elapsed:.2f} jobs/s "
        f"(tiny model, CPU, torch threads: {threads or 'default'})"
    )


if __name__ == "__main__":
    main()
