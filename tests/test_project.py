"""MLproject mirrors the CLI exactly; conda.yaml lists pyproject's dependencies."""

import re
import tomllib
from pathlib import Path

import click
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
