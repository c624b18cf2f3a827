"""Command-line flags with A1111's names. Extensions' preload.py may add flags before parsing."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence

from sdwebui.config.paths import REPO_DIR

log = logging.getLogger("webui.security")


class FlagError(ValueError):
    """A combination of flags that must not start a server."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webui.sh",
        description="Stable Diffusion web UI (A1111-compatible flags).",
    )
    add = parser.add_argument
    _add_path_flags(add)
    add("--port", type=int, default=7860, help="listen port (default 7860)")
    add("--listen", action="store_true", help="bind 0.0.0.0 (needs --api-auth/--gradio-auth or --insecure)")
    add("--server-name", default=None, help="host name or address to bind")
    add("--insecure", action="store_true", help="allow --listen without authentication")
    add("--api", action="store_true", help="serve the /sdapi/v1 HTTP API beside the UI")
    add("--nowebui", action="store_true", help="serve the API only, no UI")
    add("--api-auth", default=None, help="HTTP Basic credentials for the API: user:pass[,user2:pass2]")
    add("--gradio-auth", default=None, help="credentials for the UI: user:pass[,user2:pass2]")
    add("--cors-allow-origins", default=None, help="comma-separated origins allowed by CORS")
    add(
        "--allowed-hosts",
        default=None,
        help="comma-separated host names accepted in the Host header besides IP addresses, localhost and "
        "--server-name (DNS rebinding protection); '*' accepts any",
    )
    add(
        "--max-body-size",
        type=_positive_int,
        default=128,
        metavar="MB",
        help="largest request body accepted, in MB (default 128: a 4096x4096 image in base64 fits)",
    )
    add("--use-cpu", nargs="+", default=[], metavar="MODULE", help="'all' runs everything on the CPU")
    add("--no-half", action="store_true", help="do not use fp16 for the model")
    add("--no-half-vae", action="store_true", help="keep the VAE in fp32")
    add("--precision", choices=["full", "half", "autocast"], default="autocast", help="'full' = fp32")
    add(
        "--medvram",
        action="store_true",
        help="one model component on the GPU at a time (memory_mode medvram)",
    )
    add("--medvram-sdxl", action="store_true", help="--medvram for SDXL and larger models only")
    add(
        "--lowvram",
        action="store_true",
        help="the U-Net and text encoders streamed to the GPU block by block",
    )
    add(
        "--enable-insecure-extension-access",
        action="store_true",
        help="allow extension installs when listening publicly",
    )
    add(
        "--hide-ui-dir-config",
        action="store_true",
        help="refuse folder paths typed in the UI (img2img Batch); implied on a public listener unless "
        "--enable-insecure-extension-access",
    )
    add("--disable-all-extensions", action="store_true", help="load no extension")
    add("--disable-extra-extensions", action="store_true", help="load only built-in extensions")
    add("--skip-install", action="store_true", help="do not run extensions' install.py")
    add(
        "--sd-checkpoints-limit",
        type=int,
        default=None,
        help="checkpoints kept in RAM (overrides the setting)",
    )
    add("--max-image-pixels", type=int, default=4096 * 4096, help="largest image accepted from a request")
    _add_worker_flags(add)
    return parser


def _add_path_flags(add) -> None:
    """Where models, extensions and outputs are (A1111 names)."""
    add("--data-dir", default=str(REPO_DIR), help="root for models/, extensions/, outputs/, config.json")
    add(
        "--embeddings-dir",
        default=None,
        help="textual-inversion embeddings folder (default: <data-dir>/embeddings)",
    )
    add("--ckpt", default=None, help="checkpoint file to load at start-up")
    add("--ckpt-dir", default=None, help="extra folder to search for checkpoints")
    add("--vae-dir", default=None, help="extra folder to search for VAE files")
    add("--lora-dir", default=None, help="extra folder to search for LoRA / LyCORIS files")
    add("--controlnet-dir", default=None, help="extra folder to search for ControlNet / T2I-Adapter models")
    # extra upscaler folders besides models/<family> (A1111 names; HAT has no flag there)
    add("--esrgan-models-path", default=None, help="extra folder of ESRGAN upscaler files")
    add("--realesrgan-models-path", default=None, help="extra folder of RealESRGAN upscaler files")
    add("--swinir-models-path", default=None, help="extra folder of SwinIR upscaler files")
    add("--dat-models-path", default=None, help="extra folder of DAT upscaler files")
    add("--gfpgan-models-path", default=None, help="extra folder of GFPGAN face restoration files")
    add("--codeformer-models-path", default=None, help="extra folder of CodeFormer face restoration files")


def _add_worker_flags(add) -> None:
    """Several workers on Ray behind the one queue (README: "Several GPUs and machines")."""
    add(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run jobs on N worker processes of a local Ray (one per GPU; CPU workers with --use-cpu all)",
    )
    add(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join the Ray cluster at ADDR (host:port) and run workers on its nodes; anything but a "
        "loopback address needs --insecure (Ray has no authentication)",
    )
    add(
        "--worker-step-timeout",
        type=_positive_int,
        default=300,
        metavar="S",
        help="seconds a pool worker may run a job without progress before it counts as dead (default 300)",
    )
    add("--ray-temp-dir", default=None, help="temp folder of the local Ray (default: a new one in /tmp)")


def parse_args(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    check_security(args)
    return args


def bind_address(args: argparse.Namespace) -> str:
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def is_public(args: argparse.Namespace) -> bool:
    return bind_address(args) not in ("127.0.0.1", "localhost", "::1")


def ui_dir_config_allowed(args: argparse.Namespace) -> bool:
    """May UI users name server folders (img2img Batch)? Not with --hide-ui-dir-config, nor, by default,
    when anyone on the network can reach the UI."""
    if getattr(args, "hide_ui_dir_config", False):
        return False
    return not is_public(args) or bool(getattr(args, "enable_insecure_extension_access", False))


def check_security(args: argparse.Namespace) -> None:
    if is_public(args) and not (args.api_auth or args.gradio_auth) and not args.insecure:
        raise FlagError(
            f"refusing to listen on {bind_address(args)} without authentication: anyone on the network "
            "could use this machine. Give --api-auth/--gradio-auth user:pass, or --insecure to accept the risk."
        )
    check_ray_address(args)
    for flag in ("api_auth", "gradio_auth"):
        value = getattr(args, flag)
        if value:
            parse_credentials(value, "--" + flag.replace("_", "-"))
    if is_public(args) and not (args.api_auth or args.gradio_auth):  # only reachable with --insecure
        log.warning(
            "--insecure: serving on %s without authentication. Anyone who can reach this port can run "
            "jobs, change settings and install extensions on this machine.",
            bind_address(args),
        )


def check_ray_address(args: argparse.Namespace) -> None:
    """Refuse a non-loopback --ray-address before anything connects: Ray's APIs have no authentication, so
    joining a cluster on a network means anyone there can run code on every node (and in this process)."""
    address = getattr(args, "ray_address", None)
    if not address or is_loopback_address(address):
        return
    if not args.insecure:
        raise FlagError(
            f"refusing --ray-address {address}: Ray has no authentication, so a cluster reachable on a "
            "network lets anyone on it run code on its machines. Use a loopback address, or give --insecure "
            "if the cluster sits on a trusted network."
        )
    log.warning("--insecure: joining the Ray cluster at %s; it must sit on a trusted network", address)


def is_loopback_address(address: str) -> bool:
    """`host:port` (or ray://host:port) on 127.0.0.0/8, ::1 or localhost; "auto" is not (it may name any)."""
    host = address.split("://", 1)[-1].rsplit("@", 1)[-1]
    if host.startswith("["):  # [::1]:6379
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_credentials(value: str, flag: str = "--api-auth") -> dict[str, str]:
    """'user:pass,user2:pass2' -> {user: pass}. Passwords may contain ':' after the first."""
    creds: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise FlagError(f"{flag}: expected user:password, got an entry without both parts")
        creds[user] = password
    if not creds:
        raise FlagError(f"{flag}: no credentials given")
    return creds


def uses_cpu_for_all(args: argparse.Namespace) -> bool:
    return "all" in args.use_cpu


def upscaler_dirs(args: argparse.Namespace) -> dict[str, str | None]:
    """The extra upscaler folder of each family given on the command line (None: only models/<family>)."""
    return {
        "ESRGAN": getattr(args, "esrgan_models_path", None),
        "RealESRGAN": getattr(args, "realesrgan_models_path", None),
        "SwinIR": getattr(args, "swinir_models_path", None),
        "DAT": getattr(args, "dat_models_path", None),
    }


def face_restorer_dirs(args: argparse.Namespace) -> dict[str, str | None]:
    """The extra folder of each face restorer given on the command line (None: only models/<folder>)."""
    return {
        "GFPGAN": getattr(args, "gfpgan_models_path", None),
        "CodeFormer": getattr(args, "codeformer_models_path", None),
    }


def memory_mode_flag(args: argparse.Namespace) -> str:
    """The memory mode a start-up flag asks for ("" = none: the memory_mode setting decides)."""
    for flag, mode in (("lowvram", "lowvram"), ("medvram", "medvram"), ("medvram_sdxl", "medvram-sdxl")):
        if getattr(args, flag, False):
            return mode
    return ""
