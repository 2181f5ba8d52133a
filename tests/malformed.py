"""Malformed Sign MNIST CSVs, one defect each, with the error message each must produce.

`MALFORMED_CASES[name] = (write, expected)`: `write(directory)` writes `<name>.csv` (or `.csv.gz`)
into `directory` and returns its path; `expected` is a regex that `re.search` must find in the
InputError message. Every file is a valid 30-row synthetic file with one defect at a known line
and column, so data, CLI and training tests can share the table.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from asl_mlops.data.sign_mnist import write_csv
from asl_mlops.data.synth import make_synthetic

BAD_LINE = 5  # file line of the defective row (header = line 1)
BAD_COLUMN = "pixel17"  # its defective column
_BAD_FIELD = 17  # index of pixel17 in a row (label is field 0)
_BAD_POSITION = _BAD_FIELD + 1  # 1-based header position of pixel17


@lru_cache(maxsize=1)
def valid_lines() -> tuple[str, ...]:
    """Lines (header first, no newlines) of a valid 30-row synthetic file."""
    with tempfile.TemporaryDirectory() as tmp:
        text = write_csv(make_synthetic(30, seed=0), Path(tmp) / "valid.csv").read_text()
    return tuple(text.splitlines())


def _write(directory: Path, name: str, lines: list[str], suffix: str = ".csv") -> Path:
    path = Path(directory) / f"{name}{suffix}"
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    path.write_bytes(gzip.compress(data, mtime=0) if suffix.endswith(".gz") else data)
    return path


def _set_cell(line: int, field: int, value: str) -> Callable[[list[str]], list[str]]:
    """Edit: replace one cell of a data line."""

    def edit(lines: list[str]) -> list[str]:
        cells = lines[line - 1].split(",")
        cells[field] = value
        lines[line - 1] = ",".join(cells)
        return lines

    return edit


def _every_row(change: Callable[[list[str]], list[str]]) -> Callable[[list[str]], list[str]]:
    """Edit: apply a change to the cells of every line, header included."""
    return lambda lines: [",".join(change(line.split(","))) for line in lines]


def _case(name: str, edit: Callable[[list[str]], list[str]], expected: str, suffix: str = ".csv"):
    """A table entry whose file is the valid file after `edit`; `expected` gets the file name prefixed."""

    def write(directory: Path) -> Path:
        return _write(directory, name, edit(list(valid_lines())), suffix)

    return write, re.escape(f"{name}{suffix}: ") + expected


def _cell_case(name: str, value: str, expected: str, field: int = _BAD_FIELD, suffix: str = ".csv"):
    column = "label" if field == 0 else f"pixel{field}"
    return _case(name, _set_cell(BAD_LINE, field, value), f"line {BAD_LINE}, column {column}: {expected}", suffix)


def _header(detail: str, position: int = _BAD_POSITION) -> str:
    return rf"line 1 \(header\), column {position}: {detail}"


def _insert(index: int, header_value: str, row_value: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        out = []
        for number, line in enumerate(lines):
            cells = line.split(",")
            cells.insert(index, header_value if number == 0 else row_value)
            out.append(",".join(cells))
        return out

    return edit


def _swap_header(i: int, j: int) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        cells = lines[0].split(",")
        cells[i], cells[j] = cells[j], cells[i]
        return [",".join(cells), *lines[1:]]

    return edit


def _edit_line(line: int, change: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        lines[line - 1] = change(lines[line - 1])
        return lines

    return edit


MALFORMED_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # Header problems: the first offending column and its position.
    "missing_column": _case("missing_column", _every_row(lambda c: c[:_BAD_FIELD] + c[_BAD_FIELD + 1:]),
                            _header("missing column 'pixel17'")),
    "extra_column": _case("extra_column", _insert(_BAD_FIELD, "extra", "0"),
                          _header("unexpected extra column 'extra'")),
    "extra_column_at_end": _case("extra_column_at_end", _every_row(lambda c: [*c, "0"]),
                                 _header("unexpected extra column '0'", 786)),
    "misnamed_column": _case("misnamed_column", _edit_line(1, lambda l: l.replace(",pixel17,", ",pixel_17,")),
                             _header("column is named 'pixel_17', expected 'pixel17'")),
    "wrong_order": _case("wrong_order", _swap_header(_BAD_FIELD, _BAD_FIELD + 1),
                         _header("column 'pixel18' is out of order")),
    "wrong_delimiter": _case("wrong_delimiter", lambda lines: [l.replace(",", ";") for l in lines],
                             r"line 1 \(header\): wrong delimiter ';'"),
    "tab_delimiter": _case("tab_delimiter", lambda lines: [l.replace(",", "\t") for l in lines],
                           r"line 1 \(header\): wrong delimiter '\\t'"),
    "empty_file": _case("empty_file", lambda lines: [], r"file is empty"),
    "header_only": _case("header_only", lambda lines: lines[:1], r"header only, no data rows"),
    # Cell problems at line 5, column pixel17 (or label).
    "label_9": _cell_case("label_9", "9", r"label 9 = J is not in Sign MNIST", field=0),
    "label_25": _cell_case("label_25", "25", r"label 25 is outside 0-24", field=0),
    "label_negative": _cell_case("label_negative", "-1", r"label -1 is outside 0-24", field=0),
    "negative_pixel": _cell_case("negative_pixel", "-3", r"value -3 is outside 0-255"),
    "pixel_over_255": _cell_case("pixel_over_255", "256", r"value 256 is outside 0-255"),
    "huge_integer": _cell_case("huge_integer", "99999999999999999999999", r"value 9+ is outside 0-255"),
    "fractional_pixel": _cell_case("fractional_pixel", "12.5", r"value 12.5 is not an integer"),
    "fractional_label": _cell_case("fractional_label", "3.5", r"value 3.5 is not an integer", field=0),
    "blank_cell": _cell_case("blank_cell", "", r"blank cell"),
    "blank_label": _cell_case("blank_label", "", r"blank cell", field=0),
    "nan_value": _cell_case("nan_value", "nan", r"value 'nan' is NaN"),
    "NaN_value": _cell_case("NaN_value", "NaN", r"value 'NaN' is NaN"),
    "non_numeric": _cell_case("non_numeric", "abc", r"non-numeric value 'abc'"),
    "non_numeric_label": _cell_case("non_numeric_label", "A", r"non-numeric value 'A'", field=0),
    "infinite": _cell_case("infinite", "inf", r"non-numeric value 'inf'"),
    "negative_pixel_gz": _cell_case("negative_pixel_gz", "-3", r"value -3 is outside 0-255", suffix=".csv.gz"),
    # Row shape problems.
    "truncated_row": _case("truncated_row", _edit_line(BAD_LINE, lambda l: ",".join(l.split(",")[:700])),
                           rf"line {BAD_LINE}, column pixel700: row is truncated, it has 700 fields"),
    "too_many_fields": _case("too_many_fields", _edit_line(BAD_LINE, lambda l: l + ",7"),
                             rf"line {BAD_LINE}, too many fields: 786 instead of 785"),
    "too_many_fields_first_row": _case("too_many_fields_first_row", _edit_line(2, lambda l: l + ","),
                                       r"line 2, too many fields: 786 instead of 785"),
    "row_wrong_delimiter": _case("row_wrong_delimiter", _edit_line(BAD_LINE, lambda l: l.replace(",", ";")),
                                 rf"line {BAD_LINE}, wrong delimiter ';'"),
    "blank_line": _case("blank_line", _edit_line(BAD_LINE, lambda l: ""), rf"line {BAD_LINE}, blank line"),
}
