"""Sample extension in the way of prompt fusion (used by the tests): it replaces the module attribute
`prompt_parser.get_learned_conditioning` with a wrapper of the original, which A1111 calls for the negative
prompts and, through `get_multicond_learned_conditioning`, for every AND part of the prompts.

`POST /sample-conditioning/mode?mode=...&factor=...` picks what it does: "unwrapped" (the original is the
module attribute again, as without the extension), "record" (records each call, passes through), "scale"
(records, and multiplies the positive prompts' conds by `factor`). `GET /sample-conditioning/log` returns
the calls recorded since the last mode change. The original is put back when the scripts unload.
"""

from modules import prompt_parser, script_callbacks

original = prompt_parser.get_learned_conditioning
STATE = {"mode": "unwrapped", "factor": 1.0}
CALLS = []


def sample_get_learned_conditioning(model, prompts, steps, *args, **kwargs):
    negative = bool(getattr(prompts, "is_negative_prompt", False))
    result = original(model, prompts, steps, *args, **kwargs)
    empty = model.get_learned_conditioning([""])  # as prompt fusion reads the empty prompt's cond
    CALLS.append({
        "prompts": list(prompts), "steps": steps, "args": list(args), "negative": negative,
        "size": [getattr(prompts, "width", None), getattr(prompts, "height", None)],
        "ends": [[entry.end_at_step for entry in schedule] for schedule in result],
        "cond_shape": list(result[0][0].cond.shape), "empty_shape": list(empty.shape),
    })  # fmt: skip
    if STATE["mode"] == "scale" and not negative:
        factor = STATE["factor"]
        result = [
            [
                prompt_parser.ScheduledPromptConditioning(end_at_step=e.end_at_step, cond=e.cond * factor)
                for e in s
            ]
            for s in result
        ]
    return result


def set_mode(mode: str, factor: float = 1.0):
    STATE.update(mode=mode, factor=factor)
    CALLS.clear()
    wrapped = mode != "unwrapped"
    prompt_parser.get_learned_conditioning = sample_get_learned_conditioning if wrapped else original
    return STATE


def restore():
    prompt_parser.get_learned_conditioning = original


def on_app_started(demo, app):
    app.add_api_route("/sample-conditioning/mode", set_mode, methods=["POST"])
    app.add_api_route("/sample-conditioning/log", lambda: CALLS, methods=["GET"])


script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(restore)
