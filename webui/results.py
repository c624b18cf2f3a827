"""Results area shared by txt2img and img2img: gallery, progress, infotext, and the job runner.

The runner is a Gradio generator: it queues the request in the app's job queue, then follows the job
(progress bar, live preview in the gallery, queue position) until it finishes, so the progress is shown
only in the browser session that started it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from sdwebui.engine.requests import GenerationResult, Txt2ImgRequest
from sdwebui.jobs.queue import JobState
from sdwebui.outputs.infotext import png_info_with
from webui import progress
from webui.backend import UiBackend, describe_error

log = logging.getLogger(__name__)


@dataclass
class LastResult:
    """What the session keeps about its last finished job (per-browser gr.State)."""

    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    selected: int = 0

    def selected_image(self) -> Image.Image | None:
        return self.images[self.selected] if 0 <= self.selected < len(self.images) else None

    def selected_infotext(self) -> str:
        return self.infotexts[self.selected] if 0 <= self.selected < len(self.infotexts) else ""


@dataclass
class ResultsPanel:
    gallery: gr.Gallery
    progress: gr.HTML
    infotext: gr.HTML
    status: gr.HTML
    task_id: gr.State
    last: gr.State
    save: gr.Button
    open_folder: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extras: gr.Button


def infotext_html(text: str) -> str:
    if not text:
        return ""
    return f'<div class="infotext"><p>{html.escape(text).replace(chr(10), "<br>")}</p></div>'


def build_results(tab: str, backend: UiBackend, output_folder: Callable[[], Path]) -> ResultsPanel:
    with gr.Column(elem_id=f"{tab}_results", min_width=280):
        progress_box = gr.HTML(elem_id=f"{tab}_progress", elem_classes="progress-box")
        # a failed job's message takes the gallery's place (the gallery is hidden then): see failed()
        status = gr.HTML(elem_id=f"{tab}_status", elem_classes="results-status")
        gallery = gr.Gallery(
            label="Output",
            elem_id=f"{tab}_gallery",
            format="png",
            columns=2,
            height="auto",
            object_fit="contain",
            interactive=False,
        )
        with gr.Row(elem_id=f"image_buttons_{tab}", elem_classes="image-buttons"):
            open_folder = gr.Button("📂 Folder", elem_id=f"{tab}_open_folder", min_width=60, size="sm")
            save = gr.Button("💾 Save", elem_id=f"save_{tab}", min_width=60, size="sm")
            send_img2img = gr.Button("🖼️ img2img", elem_id=f"{tab}_send_to_img2img", min_width=60, size="sm")
            send_inpaint = gr.Button("🎨️ inpaint", elem_id=f"{tab}_send_to_inpaint", min_width=60, size="sm")
            send_extras = gr.Button("📐 extras", elem_id=f"{tab}_send_to_extras", min_width=60, size="sm")
        infotext = gr.HTML(elem_id=f"html_info_{tab}", elem_classes="infotext-box")
    task_id = gr.State("")
    last = gr.State(LastResult())

    def select(last_result: LastResult, evt: gr.SelectData):
        last_result.selected = int(evt.index or 0)
        return last_result, infotext_html(last_result.selected_infotext())

    gallery.select(select, inputs=last, outputs=[last, infotext], show_progress="hidden")

    def save_selected(last_result: LastResult):
        image = last_result.selected_image()
        if image is None:
            return error_message("Nothing to save: generate an image first.")
        folder = output_folder() / "saved"
        folder.mkdir(parents=True, exist_ok=True)
        path = _next_free(folder, last_result.seeds[last_result.selected] if last_result.seeds else 0)
        image.save(path, pnginfo=png_info_with(last_result.selected_infotext()))
        return f"<span>Saved to {html.escape(str(path))}</span>"

    save.click(save_selected, inputs=last, outputs=status, show_progress="hidden")
    open_folder.click(
        lambda: f"<span>Output folder: {html.escape(str(output_folder()))}</span>",
        outputs=status,
        show_progress="hidden",
    )
    return ResultsPanel(
        gallery,
        progress_box,
        infotext,
        status,
        task_id,
        last,
        save,
        open_folder,
        send_img2img,
        send_inpaint,
        send_extras,
    )


def error_message(message: str) -> str:
    return progress.error_html(message)


def _next_free(folder: Path, seed: int) -> Path:
    number = len(list(folder.glob("*.png")))
    while (folder / f"{number:05d}-{seed}.png").exists():
        number += 1
    return folder / f"{number:05d}-{seed}.png"


def run_job(
    backend: UiBackend,
    panel: ResultsPanel,
    build_request: Callable[[], Txt2ImgRequest],
    build_script_call: Callable[[], Any] | None = None,
) -> Iterator[dict]:
    """Queue the request and yield UI updates until the job ends. Errors become a readable message."""
    try:
        request = build_request()
        job = backend.submit(request, build_script_call() if build_script_call else None)
    except Exception as exc:  # gr.Error included: shown in the tab, not as a toast that fades away
        yield failed(panel, describe_error(exc))
        return
    yield {
        panel.task_id: job.id,
        panel.status: "",
        panel.infotext: "",
        panel.progress: "",
        panel.gallery: gr.update(visible=True),
    }
    shown_preview = 0
    for snap in progress.follow(job, backend.jobs):
        if snap.finished:
            break
        update = {panel.progress: snap.progress_html}
        if snap.preview is not None and snap.preview_id != shown_preview:
            shown_preview = snap.preview_id
            update[panel.gallery] = [backend.gallery_files.write(snap.preview, stem="preview")]
        yield update
    if job.state is not JobState.DONE:
        yield failed(panel, f"Generation failed: {job.error or f'the job ended as {job.state.value}'}")
        return
    yield finished(backend, panel, job.result)


def failed(panel: ResultsPanel, message: str) -> dict:
    """The stale live preview / old images go; the message stands where the image would be."""
    return {
        panel.progress: "",
        panel.task_id: "",
        panel.gallery: gr.update(value=[], visible=False),
        panel.last: LastResult(),
        panel.infotext: "",
        panel.status: error_message(message),
    }


def finished(backend: UiBackend, panel: ResultsPanel, result: GenerationResult) -> dict:
    last = LastResult(result.pil_images, result.infotexts, result.seeds, result.subseeds)
    note = (
        '<span class="status-note">Interrupted: showing what was finished.</span>'
        if result.interrupted
        else ""
    )
    if not result.images:
        return failed(
            panel, "The job finished without images" + (" (interrupted)." if result.interrupted else ".")
        )
    infotexts = [*last.infotexts, *[""] * len(last.images)]
    files = [
        backend.gallery_files.write(image, text) for image, text in zip(last.images, infotexts, strict=False)
    ]
    return {
        panel.progress: "",
        panel.task_id: "",
        panel.gallery: gr.update(value=files, visible=True),
        panel.last: last,
        panel.infotext: infotext_html(last.selected_infotext()),
        panel.status: note,
    }


def wire_controls(backend: UiBackend, panel: ResultsPanel, interrupt: gr.Button, skip: gr.Button) -> None:
    """Interrupt / Skip act on this session's own job (a queued one is cancelled)."""

    def do_interrupt(task_id: str):
        if not task_id:
            return gr.update()
        job = backend.jobs.get(task_id)
        if job is not None and job.state is JobState.QUEUED:
            backend.jobs.cancel(task_id)
        else:
            backend.jobs.interrupt(task_id)
        return '<span class="status-note">Interrupting...</span>'

    def do_skip(task_id: str):
        if task_id:
            backend.jobs.skip(task_id)
        return gr.update()

    interrupt.click(
        do_interrupt, inputs=panel.task_id, outputs=panel.status, show_progress="hidden", queue=False
    )
    skip.click(do_skip, inputs=panel.task_id, outputs=panel.status, show_progress="hidden", queue=False)
