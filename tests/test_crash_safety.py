"""kill -9 in the middle of saving leaves no corrupt PNG, config.json or styles.csv (issue 13, "keep what holds").

Every file is written under a temporary name and renamed (or hard-linked) into place, so a process killed at
any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from PIL import Image

from modules.styles import StyleDatabase
from tests.api_server import REPO_ROOT, start_server

BODY = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "batch_size": 2, "save_images": True}


def _final_pngs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "outputs").rglob("*.png") if not p.name.startswith(".")]


def _keep_saving(server, stop: threading.Event) -> None:
    """Generations that save PNGs and settings changes that rewrite config.json, until the server dies."""
    value = 0
    while not stop.is_set():
        try:
            requests.post(server.api + "/txt2img", json={**BODY, "seed": value}, timeout=60)
            requests.post(
                server.api + "/options", json={"show_progress_every_n_steps": value % 3}, timeout=60
            )
        except requests.RequestException:
            return  # the server was killed
        value += 1


def test_kill_9_while_saving_images_and_settings(tmp_path):
    with start_server(tmp_path, timeout=300) as server:  # empty data dir: the embedded default model
        stop = threading.Event()
        clients = [threading.Thread(target=_keep_saving, args=(server, stop), daemon=True) for _ in range(2)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 240
        while len(_final_pngs(tmp_path)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_final_pngs(tmp_path)) >= 6, server.log()[-2000:]
        server.process.send_signal(signal.SIGKILL)  # mid-stream: jobs are queued and saving
        server.process.wait(10)
        stop.set()
        for client in clients:
            client.join(60)
    for path in _final_pngs(tmp_path):
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert "Steps: 2" in image.info["parameters"], path
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert isinstance(config, dict) and config["show_progress_every_n_steps"] in (0, 1, 2)


_STYLE_WRITER = """
import sys
from modules.styles import PromptStyle, StyleDatabase
db = StyleDatabase(__import__("pathlib").Path(sys.argv[1]))
n = 0
while True:
    db.save_style(PromptStyle(f"style {n % 50}", "masterpiece, " * (n % 200), "blurry"))
    n += 1
    print(n, flush=True)
"""


def test_kill_9_while_saving_styles(tmp_path):
    path = tmp_path / "styles.csv"
    writer = subprocess.Popen(
        [sys.executable, "-c", _STYLE_WRITER, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(300):  # let it rewrite the file a few hundred times, then kill it mid-loop
            assert writer.stdout.readline(), "the writer stopped"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    db = StyleDatabase(path)
    assert db.load_warnings == []
    assert len(db.names()) == 50 and all(style.negative_prompt == "blurry" for style in db.all())
