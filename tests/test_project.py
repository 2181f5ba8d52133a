"""MLproject mirrors the CLI exactly; conda.yaml lists pyproject's dependencies."""

import re
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from asl_mlops.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli_options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name != "help"}


def entry_point(name: str) -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"][name]


def check_entry_point_mirrors(name: str, command: click.Command) -> None:
    ep = entry_point(name)
    params, text = ep["parameters"], ep["command"]
    options = cli_options(command)
    assert set(params) == set(options), "MLproject parameters and CLI options differ"
    for key, option in options.items():
        flag = "--" + key.replace("_", "-")
        assert f"{flag} {{{key}}}" in text, f"{key} is declared but not passed as {flag}"
        default = params[key]["default"]
        if isinstance(option.default, bool):
            assert str(default).lower() == str(option.default).lower(), key
        else:
            assert type(option.default)(default) == option.default, f"{key}: MLproject {default} != CLI {option.default}"
    assert set(re.findall(r"\{(\w+)\}", text)) == set(params), "command uses undeclared parameters"


def test_main_entry_point_mirrors_train_command():
    check_entry_point_mirrors("main", main.commands["train"])


def test_original_entry_point_takes_the_train_options_with_the_original_designs_defaults():
    original, main_ep = entry_point("original"), entry_point("main")
    assert original["command"] == main_ep["command"], "original must run the same train command as main"
    assert set(original["parameters"]) == set(main_ep["parameters"])
    defaults = {k: v["default"] for k, v in original["parameters"].items()}
    changed = {k for k in defaults if str(defaults[k]) != str(main_ep["parameters"][k]["default"])}
    assert changed == {"architecture", "weights", "learning_rate", "epochs", "batch_size", "l2", "flip_horizontal",
                       "flip_vertical", "rotation", "zoom", "translation", "ema", "tta", "ensemble"}
    # The defaults parse as the train command's options and give the original design's configuration.
    args = [f"--{k.replace('_', '-')}={v}" for k, v in defaults.items()]
    context = main.commands["train"].make_context("train", args)
    params = context.params
    assert params["architecture"] == "resnet50" and params["weights"] == "imagenet"
    assert params["learning_rate"] == 1e-5 and params["epochs"] == 50 and params["batch_size"] == 256
    assert params["l2"] == 0.001 and params["flip_horizontal"] and params["flip_vertical"]
    assert params["rotation"] == params["zoom"] == params["translation"] == 0
    assert not params["ema"] and not params["tta"] and params["ensemble"] == "1"


def test_issue_parameter_names_are_present():
    names = set(entry_point("main")["parameters"])
    assert {"train_data", "test_data", "architecture", "weights", "learning_rate", "decay_rate", "l2",
            "epochs", "batch_size", "seed", "early_stopping"} <= names


def test_conda_env_lists_pyproject_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(pip_section) == sorted(deps)


def test_every_command_has_help():
    def walk(command: click.Command, path: str):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for path, command in walk(main, "asl-mlops"):
        assert command.help, f"{path} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{path} {param.opts[0]} has no help"


def test_tune_entry_point_mirrors_tune_command():
    check_entry_point_mirrors("tune", main.commands["tune"])


@pytest.mark.slow
def test_one_opencv_distribution_and_cv2_imports_without_a_display():
    import os
    import subprocess
    import sys
    from importlib import metadata

    opencv = sorted({d.metadata["Name"].lower() for d in metadata.distributions()
                     if (d.metadata["Name"] or "").lower().startswith("opencv")})
    assert opencv == ["opencv-contrib-python"], opencv  # mediapipe's, and nothing else writing the cv2 package
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-c", "import cv2, mediapipe; print(cv2.__version__)"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
