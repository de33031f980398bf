"""The `streamlit run` command `cxr app` builds, and the page reading its arguments back."""
import pytest

from app import launch, uploads


def _settings(arguments):
    """Streamlit's --section.option value pairs before `--`."""
    options = arguments[arguments.index(launch.PAGE_SCRIPT) + 1:arguments.index("--")]
    return dict(zip(options[::2], options[1::2]))


@pytest.mark.parametrize("options", [
    launch.AppOptions(model_dir="/srv/serving_model"),
    launch.AppOptions(server="localhost:8500", model_name="cxr_classifier"),
    launch.AppOptions(model_dir="/srv/m", server="tf-serving:8500", model_name="cxr"),
])
def test_the_page_receives_exactly_the_options_given(options):
    arguments = launch.streamlit_arguments(options, port=8600, address="127.0.0.1")
    assert arguments[:2] == ["run", launch.PAGE_SCRIPT]
    assert launch.parse_page_arguments(arguments[arguments.index("--") + 1:]) == options


def test_the_server_is_headless_offline_and_limits_uploads():
    settings = _settings(launch.streamlit_arguments(launch.AppOptions(model_dir="m"), 8600,
                                                    "0.0.0.0"))
    assert settings["--server.port"] == "8600"
    assert settings["--server.address"] == "0.0.0.0"
    assert settings["--server.headless"] == "true"
    assert settings["--server.maxUploadSize"] == str(uploads.MAX_UPLOAD_MB)
    assert settings["--browser.gatherUsageStats"] == "false"


@pytest.mark.parametrize("argv, message", [
    ([], "give --model-dir SERVING_DIR, --server HOST:PORT, or both"),
    (["--server", "localhost:8500"],
     "--server needs --model-name, the name the model is served under"),
    (["--model-dir", "m", "--port", "1"], "unknown arguments: --port 1"),
])
def test_unusable_page_arguments_are_explained(argv, message):
    with pytest.raises(launch.LaunchError) as error:
        launch.parse_page_arguments(argv)
    assert str(error.value) == message
