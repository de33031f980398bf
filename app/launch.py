"""How `cxr app` starts Streamlit on the page, and how the page reads the same arguments back.

The page's own arguments (which model, which server) travel after `--` on the `streamlit run`
command line; the server settings (port, address, upload limit, no usage statistics: nothing
may reach the network) are Streamlit options.
"""
import argparse
import dataclasses
import os
from typing import List, Optional, Sequence

from app.uploads import MAX_UPLOAD_MB

PAGE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streamlit_app.py")
DEFAULT_PORT = 8501
DEFAULT_ADDRESS = "127.0.0.1"


class LaunchError(ValueError):
    """The arguments name no usable model or server; the message says which flag to give."""


@dataclasses.dataclass(frozen=True)
class AppOptions:
    model_dir: Optional[str] = None
    server: Optional[str] = None
    model_name: Optional[str] = None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", metavar="SERVING_DIR",
                        help="SERVING_DIR (holding one model), SERVING_DIR/<model_name> (its "
                             "newest version) or one version folder; needed for Grad-CAM and "
                             "the model card")
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="predict through TF Serving's gRPC endpoint (e.g. localhost:8500) "
                             "instead of in this process")
    parser.add_argument("--model-name",
                        help="the name the model is served under (with --server), or which "
                             "model of SERVING_DIR to load")


def check_options(options: AppOptions) -> AppOptions:
    if not options.model_dir and not options.server:
        raise LaunchError("give --model-dir SERVING_DIR, --server HOST:PORT, or both")
    if options.server and not options.model_name:
        raise LaunchError("--server needs --model-name, the name the model is served under")
    return options


def parse_page_arguments(argv: Sequence[str]) -> AppOptions:
    """The page's arguments (after `--`), LaunchError when they are unusable."""
    parser = argparse.ArgumentParser(prog="streamlit run app/streamlit_app.py --",
                                     exit_on_error=False)
    add_model_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise LaunchError(str(error)) from None
    if unknown:
        raise LaunchError(f"unknown arguments: {' '.join(unknown)}")
    return check_options(AppOptions(args.model_dir, args.server, args.model_name))


def streamlit_arguments(options: AppOptions, port: int = DEFAULT_PORT,
                        address: str = DEFAULT_ADDRESS) -> List[str]:
    """`streamlit run` on the page (without the program name), headless, uploads limited."""
    page_arguments = []
    for flag, value in (("--model-dir", options.model_dir), ("--server", options.server),
                        ("--model-name", options.model_name)):
        if value:
            page_arguments += [flag, value]
    return ["run", PAGE_SCRIPT,
            "--server.port", str(port), "--server.address", address,
            "--server.headless", "true",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false",
            "--theme.base", "light",
            "--client.toolbarMode", "viewer",
            "--", *page_arguments]


def run_streamlit(arguments: Sequence[str]) -> None:
    """Streamlit's own command line, in this process: modules already imported here
    (TensorFlow above all) need not be imported again when the page first runs."""
    from streamlit.web import cli as streamlit_cli

    streamlit_cli.main(list(arguments), prog_name="streamlit", standalone_mode=False)
