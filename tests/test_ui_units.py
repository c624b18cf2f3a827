"""UI helpers without a browser: upscaling, ui-config.json, brush masks, outpainting, native size, progress."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from sdwebui.engine.requests import Img2ImgRequest
from sdwebui.engine.upscaling import UPSCALERS, UpscaleError, upscale
from sdwebui.jobs.queue import Job, JobQueue, JobState, Progress
from sdwebui.models.model import CheckpointInfo
from webui.img2img_tab import outpaint_from_ui, stroke_mask
from webui.model_size import checkpoint_resolution, native_resolution
from webui.params import build_params
from webui.progress import StepTimer, format_eta, progress_html
from webui.ui_config import UiConfig


def test_upscale_by_factor_and_to_size():
    image = Image.new("RGB", (10, 6), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))
    bigger = upscale(image, 2.0, "Nearest")
    assert bigger.size == (20, 12)
    assert bigger.getpixel((1, 1)) == (0, 0, 255) and bigger.getpixel((2, 2)) == (255, 0, 0)
    assert upscale(image, (33, 17), "Lanczos").size == (33, 17)
    assert {"Lanczos", "Nearest"} <= set(UPSCALERS)


@pytest.mark.parametrize(
    "scale, name, field",
    [
        (2.0, "Bicubic-9000", "upscaler_1"),
        (0, "Lanczos", "upscaling_resize"),
        ((0, 10), "Lanczos", "upscaling_resize_w"),
    ],
)
def test_upscale_bad_input_names_the_field(scale, name, field):
    with pytest.raises(UpscaleError) as err:
        upscale(Image.new("RGB", (8, 8)), scale, name)
    assert err.value.field == field


def test_ui_config_overrides_and_writes_missing_keys(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 33, "txt2img/Width/value": "junk"}))
    cfg = UiConfig(path)
    with gr.Blocks():
        steps = cfg.make("txt2img", gr.Slider, "Sampling steps", minimum=1, maximum=150, value=20)
        width = cfg.make("txt2img", gr.Slider, "Width", minimum=64, maximum=2048, value=512)
    assert steps.value == 33
    assert width.value == 512  # a value of the wrong type is ignored
    cfg.save_missing()
    saved = json.loads(path.read_text())
    assert saved["txt2img/Sampling steps/value"] == 33  # the user's value is kept
    assert saved["txt2img/Sampling steps/maximum"] == 150
    assert saved["txt2img/Width/value"] == "junk"  # never rewritten behind the user's back


def test_stroke_mask_is_white_where_painted():
    background = Image.new("RGBA", (40, 30), (0, 0, 255, 255))
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    for x in range(5, 15):
        layer.putpixel((x, 10), (255, 255, 255, 200))
    mask = stroke_mask({"background": background, "layers": [layer], "composite": background})
    assert mask.size == (40, 30)
    assert mask.getbbox() == (5, 10, 15, 11)
    assert mask.getpixel((6, 10)) == 255 and mask.getpixel((0, 0)) == 0
    empty = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert stroke_mask({"background": background, "layers": [empty], "composite": background}) is None
    assert stroke_mask(None) is None


def test_outpaint_from_ui_grows_the_request_with_the_engine():
    image = Image.new("RGB", (64, 32), (10, 200, 10))
    request = Img2ImgRequest(
        prompt="x", init_images=[image], width=64, height=32, mask_blur_x=0, mask_blur_y=0
    )
    grown = outpaint_from_ui(request, ["left", "down"], 16, "fill")
    canvas, mask = grown.init_images[0], grown.mask
    assert canvas.size == mask.size == (80, 48) and (grown.width, grown.height) == (80, 48)
    assert canvas.getpixel((16, 0)) == (10, 200, 10)  # the original sits at the offset
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((20, 40)) == 255
    assert mask.getpixel((16, 0)) == 0 and mask.getpixel((79, 31)) == 0
    with pytest.raises(gr.Error, match="direction"):
        outpaint_from_ui(request, [], 16, "fill")
    with pytest.raises(gr.Error, match="sideways"):
        outpaint_from_ui(request, ["sideways"], 16, "fill")


def test_native_resolution_from_the_checkpoint_header(tmp_path):
    from tests.tiny_models import TINY_RESOLUTION, tiny_loaded_model, write_single_file

    path = write_single_file(tiny_loaded_model("sd1"), tmp_path / "tiny.safetensors")
    checkpoint_resolution.cache_clear()
    assert checkpoint_resolution(path) == TINY_RESOLUTION
    assert checkpoint_resolution(tmp_path / "missing.safetensors") == 512  # unknown: the SD1 size

    class Provider:  # what the UI sees of the ModelManager before anything is loaded
        preferred = str(path)

        def checkpoints(self):
            return [CheckpointInfo(path=path, name="tiny", title="tiny.safetensors", filename=str(path))]

    assert native_resolution(Provider()) == TINY_RESOLUTION


def test_size_defaults_follow_the_model_unless_saved(tmp_path):
    path = tmp_path / "ui-config.json"
    cfg = UiConfig(path)
    with gr.Blocks():
        params = build_params("txt2img", cfg, ["Euler"], ["Automatic"], "Euler", native_size=1024)
    assert params.width.value == params.height.value == 1024
    cfg.save_missing()
    saved = json.loads(path.read_text())
    assert "txt2img/Width/value" not in saved and saved["txt2img/Width/maximum"] == 2048
    saved["txt2img/Width/value"] = 768
    path.write_text(json.dumps(saved))
    cfg = UiConfig(path)
    with gr.Blocks():
        params = build_params("txt2img", cfg, ["Euler"], ["Automatic"], "Euler", native_size=64)
    assert params.width.value == 768 and params.height.value == 64
    assert cfg.has_value("txt2img", "Width") and not cfg.has_value("txt2img", "Height")


def test_progress_text_shows_steps_eta_and_queue_place():
    queue = JobQueue(workers=1)
    try:
        job = Job(id="task(x)", kind="txt2img", work=lambda ctx: None)
        job.state = JobState.RUNNING
        job.progress = Progress(job_no=0, job_count=2, step=5, steps=10)
        job.started_at = 0.0
        timer = StepTimer()
        job.progress = Progress(job_no=0, job_count=2, step=4, steps=10)
        progress_html(job, queue, timer, now=100.0)
        job.progress = Progress(job_no=0, job_count=2, step=5, steps=10)
        text = progress_html(job, queue, timer, now=101.0)
        assert "Batch 1/2, Step 5/10" in text and "ETA 15s" in text and "width:25.0%" in text
        job.state = JobState.QUEUED
        assert "In queue: 0 jobs ahead" in progress_html(job, queue)
    finally:
        queue.shutdown()
    assert format_eta(75) == "ETA 1:15" and format_eta(9.6) == "ETA 10s" and format_eta(None) == ""


def test_eta_comes_from_this_jobs_measured_step_times():
    """An 18 s job (2 images x 30 steps at 0.25 s, after a 3 s model load and a 1.5 s decode between the
    images): Job.eta's elapsed / fraction counted the load as sampling; the measured rate does not jump."""
    timer, now, etas = StepTimer(), 3.0, []
    for image in range(2):
        for step in range(1, 31):
            now += 0.25
            eta = timer.eta(Progress(job_no=image, job_count=2, step=step, steps=30), now)
            if eta is not None:
                etas.append((now, eta))
        now += 1.5  # VAE decode and save between the images
    assert etas[0][1] == pytest.approx(58 * 0.25)  # after two steps: 58 steps left at 0.25 s
    sampling_done = 3.0 + 2 * 30 * 0.25 + 1.5  # when the last step ends
    # every prediction of the end is off by at most the one decode it cannot know about
    assert all(abs(at + eta - sampling_done) <= 1.5 + 1e-6 for at, eta in etas), etas
    assert timer.eta(Progress(0, 1, 0, 30), now) is None  # nothing done yet


class _Options(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def _backend(tmp_path, options: dict, models=None, args=None):
    from types import SimpleNamespace

    from webui.backend import UiBackend

    paths = SimpleNamespace(data_dir=tmp_path, outputs_dir=tmp_path / "outputs")
    return UiBackend(SimpleNamespace(options=_Options(options), paths=paths, models=models, args=args))


@pytest.mark.parametrize(
    "flags, allowed",
    [
        ([], True),
        (["--hide-ui-dir-config"], False),
        (["--listen", "--insecure"], False),
        (["--listen", "--insecure", "--enable-insecure-extension-access"], True),
    ],
)
def test_batch_folders_refused_when_dir_config_is_hidden_or_public(tmp_path, flags, allowed):
    from modules.cmd_args import parse_args
    from webui.img2img_tab import run_batch

    (tmp_path / "in").mkdir()
    backend = _backend(tmp_path, {}, args=parse_args(flags))
    assert backend.dir_config_allowed is allowed
    panel = type("Panel", (), {"status": "status", "task_id": "task", "progress": "progress"})()
    updates = list(run_batch(backend, panel, str(tmp_path / "in"), str(tmp_path / "out"), {}, None))
    message = updates[-1]["status"]
    assert ("folder paths are disabled" in message) is not allowed
    assert allowed or not (tmp_path / "out").exists()


def test_extras_folder_is_the_outdir_extras_samples_setting(tmp_path):
    assert _backend(tmp_path, {}).extras_dir() == tmp_path / "outputs" / "extras-images"
    assert _backend(tmp_path, {"outdir_extras_samples": "mine/up"}).extras_dir() == tmp_path / "mine" / "up"
    absolute = tmp_path / "elsewhere"
    assert _backend(tmp_path, {"outdir_extras_samples": str(absolute)}).extras_dir() == absolute


def test_unset_checkpoint_setting_shows_the_model_in_use(tmp_path):
    from webui.settings_tab import apply_values, displayed_value

    class Models:
        preferred = str(tmp_path / "b.safetensors")

        def checkpoints(self):
            return [
                CheckpointInfo(path=tmp_path / n, name=n, title=f"{n} [abc]", filename=str(tmp_path / n))
                for n in ("a.safetensors", "b.safetensors")
            ]

        def checkpoint_titles(self):
            return [info.title for info in self.checkpoints()]

        def current_title(self):
            return None

    backend = _backend(tmp_path, {"sd_model_checkpoint": ""}, Models())
    assert displayed_value(backend, "sd_model_checkpoint") == "b.safetensors [abc]"  # --ckpt wins over first
    backend.options.data_labels = {}
    assert apply_values(backend, ["sd_model_checkpoint"], ["b.safetensors [abc]"]) == ([], None)


def test_gradio_errors_read_as_their_message():
    from webui.backend import describe_error

    assert describe_error(gr.Error("Inpaint: draw a mask first.")) == "Inpaint: draw a mask first."


def test_pasting_infotext_runs_the_extensions_callbacks():
    from modules import script_callbacks
    from webui.paste import pasted_params

    def double_steps(text, params):
        params["Steps"] = str(int(params["Steps"]) * 2)

    script_callbacks.on_infotext_pasted(double_steps)
    try:
        params = pasted_params("a cat\nSteps: 7, Sampler: Euler, Seed: 3, Size: 64x64")
    finally:
        script_callbacks.remove_callbacks_for_function(double_steps)
    assert params["Steps"] == "14" and params["Prompt"] == "a cat"


def test_gallery_files_are_whole_when_handed_out_and_carry_their_parameters(tmp_path):
    from sdwebui.outputs.infotext import read_infotext
    from webui.gallery_files import GalleryFiles

    files = GalleryFiles(tmp_path, keep=3)
    same = Image.new("RGB", (32, 16), (10, 200, 30))
    paths = [files.write(same, "a prompt\nSteps: 2, Seed: 5") for _ in range(4)]
    # the same picture twice is two files: a later write never rewrites a file being served
    assert len(set(paths)) == 4
    assert not Path(paths[0]).exists()  # only the newest `keep` are kept
    with Image.open(paths[-1]) as image:
        assert image.size == (32, 16) and read_infotext(image) == "a prompt\nSteps: 2, Seed: 5"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(p).name for p in paths[1:]
    )  # no temp left


def test_grid_legends_wider_than_a_cell_wrap_and_stay_over_their_column():
    from modules.images import GridAnnotation, draw_grid_annotations

    cells = Image.new("RGB", (128, 128), (120, 120, 120))
    hor = [[GridAnnotation("CFG Scale: 1.0")], [GridAnnotation("CFG Scale: 2.0")]]
    ver = [[GridAnnotation("Steps: 10")], [GridAnnotation("Steps: 20")]]
    grid = draw_grid_annotations(cells, 64, 64, hor, ver)
    x0, top = grid.width - 128, grid.height - 128

    def inked_columns(x_range, y_range):
        return {x for x in x_range if any(sum(grid.getpixel((x, y))) < 600 for y in y_range)}

    labels = inked_columns(range(grid.width), range(top))
    # over the cells, not past the grid's edges, with a gap where the columns meet (they ran together)
    assert labels and min(labels) >= x0 and max(labels) < grid.width - 1, (min(labels), max(labels), x0)
    assert set(range(x0 + 62, x0 + 67)) - labels
    rows = inked_columns(range(x0), range(top, grid.height))
    assert rows and min(rows) > 0 and max(rows) < x0 - 1
