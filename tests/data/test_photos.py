"""Tests for asl_mlops.data.photos: photo folders as a data format, decoding, Kaggle layouts, the `data` CLI on folders."""

import hashlib
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from asl_mlops.cli import main
from asl_mlops.data import download as photo_download
from asl_mlops.data.download import layout_letter_folders
from asl_mlops.data.images import MAX_IMAGE_PIXELS
from asl_mlops.data.photos import (
    PhotoSet,
    decode_rgb,
    is_photo_folder,
    load_photo_folder,
    read_rgb,
)
from asl_mlops.data.synth import write_synthetic_photos
from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS, LETTERS
from conftest import REAL_HANDS


def encoded(image: np.ndarray, suffix: str = ".png") -> bytes:
    """An RGB (or gray) array as PNG/JPEG bytes."""
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    assert ok
    return data.tobytes()


def small_photo(seed: int = 0, suffix: str = ".jpg") -> bytes:
    return encoded(np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8), suffix)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two photos per letter, plus what loading must ignore: root files, J, Z, nothing/ and del/ folders."""
    root = write_synthetic_photos(tmp_path / "photos", per_letter=2, seed=3, size=32)
    (root / "labels.csv").write_text("path,letter\n")  # any file but manifest.csv, which names signers
    for name, count in (("J", 1), ("Z", 2), ("del", 3)):
        (root / name).mkdir()
        for i in range(count):
            (root / name / f"{i}.jpg").write_bytes(small_photo(i))
    return root


# --- loading ---------------------------------------------------------------------------------------


def test_folder_loads_every_letter_in_order_and_skips_the_rest(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asl_mlops.data.photos"):
        loaded = load_photo_folder(folder)
    assert is_photo_folder(folder) and not is_photo_folder(folder / "README.txt")
    assert len(loaded) == 48 and loaded.root == str(folder)
    assert loaded.labels.dtype == np.int64 and not loaded.labels.flags.writeable
    np.testing.assert_array_equal(loaded.labels, np.repeat(LABELS, 2))
    assert [p.relative_to(folder).as_posix() for p in loaded.paths[:3]] == ["A/A0.jpg", "A/A1.png", "B/B0.jpg"]
    assert loaded.skipped_folders == {"J": 1, "Z": 2, "del": 3, "nothing": 2}
    assert len(caplog.records) == 1 and "del (3 files)" in caplog.text and "nothing (2 files)" in caplog.text
    assert all(len(h) == 64 for h in loaded.file_hashes)
    assert loaded.file_hashes[0] == hashlib.sha256(loaded.paths[0].read_bytes()).hexdigest()


def test_content_hash_is_stable_and_independent_of_location(folder: Path, tmp_path: Path) -> None:
    first = load_photo_folder(folder)
    copy = Path(shutil.copytree(folder, tmp_path / "elsewhere"))
    assert load_photo_folder(copy).content_hash == first.content_hash == load_photo_folder(folder).content_hash
    # Same seed, same bytes: a rewritten synthetic folder has the same hash.
    again = write_synthetic_photos(tmp_path / "again", per_letter=2, seed=3, size=32)
    assert load_photo_folder(again).content_hash == first.content_hash
    (copy / "A" / "A0.jpg").rename(copy / "B" / "A0.jpg")  # same bytes, other letter
    assert load_photo_folder(copy).content_hash != first.content_hash


def test_subset_keeps_root_and_matching_fields(folder: Path) -> None:
    loaded = load_photo_folder(folder)
    part = loaded.subset([0, 5, 47])
    assert isinstance(part, PhotoSet) and len(part) == 3 and part.root == loaded.root
    assert part.paths == (loaded.paths[0], loaded.paths[5], loaded.paths[47])
    assert part.file_hashes == (loaded.file_hashes[0], loaded.file_hashes[5], loaded.file_hashes[47])
    np.testing.assert_array_equal(part.labels, loaded.labels[[0, 5, 47]])
    assert len(loaded.subset(loaded.labels == 0)) == 2


def test_lowercase_and_nested_letter_folders(tmp_path: Path) -> None:
    for letter in ("a", "b"):
        (tmp_path / letter / "hand1").mkdir(parents=True)
        (tmp_path / letter / "hand1" / f"{letter}.JPEG").write_bytes(small_photo(ord(letter)))
    loaded = load_photo_folder(tmp_path)
    assert loaded.labels.tolist() == [0, 1]
    assert loaded.paths[0] == tmp_path / "a" / "hand1" / "a.JPEG"


def test_non_image_files_are_warned_about_and_skipped(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "A" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "A" / "Thumbs.db").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="asl_mlops.data.photos"):
        assert len(load_photo_folder(folder)) == 48
    assert str(folder / "A" / ".DS_Store") in caplog.text and str(folder / "A" / "Thumbs.db") in caplog.text


def test_empty_letter_is_warned_about(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    for path in (folder / "K").iterdir():
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="asl_mlops.data.photos"):
        assert len(load_photo_folder(folder)) == 46
    assert f"{folder / 'K'}: no photos, letter K has no training examples" in caplog.text


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello, I am text\n", "not a PNG or JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "truncated PNG"),
])
def test_bad_photo_is_an_input_error_naming_the_path(folder: Path, content: bytes, message: str) -> None:
    bad = folder / "C" / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_photo_folder(folder)
    assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)


def test_truncated_jpeg_names_the_path_on_load_and_on_read(folder: Path) -> None:
    bad = folder / "C" / "cut.jpg"
    bad.write_bytes(small_photo(1)[:200])
    with pytest.raises(InputError, match=rf"^{bad}: truncated JPEG"):
        read_rgb(bad)
    with pytest.raises(InputError, match=rf"^{bad}: truncated JPEG"):
        load_photo_folder(folder)


def test_folder_without_letter_folders_says_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"no letter folders.*found folders 'train' and 1 file") as info:
        load_photo_folder(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_letter_folders_without_photos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "README").write_text("x")
    with pytest.raises(InputError, match=rf"^{tmp_path}: no photos"):
        load_photo_folder(tmp_path)


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope: folder not found; expected a folder with one sub-folder"):
        load_photo_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"file: is not a folder"):
        load_photo_folder(tmp_path / "file")


# --- who signed: signer folders and manifest.csv ---------------------------------------------------


def signer_folders(root: Path, letters_of: dict[str, str]) -> Path:
    """DIR/<signer>/<LETTER>/<signer>_<letter>.jpg, one photo per letter of each signer."""
    for n, (signer, letters) in enumerate(letters_of.items()):
        for letter in letters:
            (root / signer / letter).mkdir(parents=True, exist_ok=True)
            (root / signer / letter / f"{signer}_{letter}.jpg").write_bytes(small_photo(10 * n + ord(letter)))
    return root


MANIFEST_ROWS = [("A/a1.jpg", "A", "alice"), ("A/b1.jpg", "A", "bob"), ("B/a2.png", "B", "alice"),
                 ("C/c1.jpg", "C", "carol")]


def with_manifest(root: Path, rows: list[tuple[str, str, str]] = MANIFEST_ROWS,
                  photos: list[str] | None = None) -> Path:
    """Letter folders holding `photos` (default: the rows' paths) and a manifest.csv listing `rows`, with the
    extra columns the shared hands set has."""
    for i, relative in enumerate(photos if photos is not None else [row[0] for row in rows]):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(small_photo(i, Path(relative).suffix))
    lines = ["path,letter,label,source,signer,source_repo"]
    lines += [f"{path},{letter},0,web,{signer},someone/repo" for path, letter, signer in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_plain_letter_folders_are_one_unknown_signer(folder: Path) -> None:
    loaded = load_photo_folder(folder)
    assert loaded.layout == "letters" and loaded.signers == ("",) * 48 and loaded.named_signers == ()


def test_signer_folders_load_with_their_signers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = signer_folders(tmp_path / "set", {"alice": "AB", "bob.2": "AC"})
    (root / "bob.2" / "del").mkdir()
    (root / "bob.2" / "del" / "x.jpg").write_bytes(small_photo(0))
    (root / "notes").mkdir()  # no letter folders inside: not a signer, skipped
    (root / "notes" / "n.txt").write_text("x")
    (root / "README.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="asl_mlops.data.photos"):
        loaded = load_photo_folder(root)
    assert loaded.layout == "signers" and loaded.named_signers == ("alice", "bob.2")
    assert [p.relative_to(root).as_posix() for p in loaded.paths] == [
        "alice/A/alice_A.jpg", "bob.2/A/bob.2_A.jpg", "alice/B/alice_B.jpg", "bob.2/C/bob.2_C.jpg"]
    assert loaded.signers == ("alice", "bob.2", "alice", "bob.2") and loaded.labels.tolist() == [0, 0, 1, 2]
    assert loaded.skipped_folders == {"notes": 1, "bob.2/del": 1} and "bob.2/del (1 files)" in caplog.text
    part = loaded.subset([1, 3])
    assert part.signers == ("bob.2", "bob.2") and part.layout == "signers" and part.named_signers == ("bob.2",)


@pytest.mark.parametrize("name", ["bad name!", "-dash", "a" * 65])
def test_bad_signer_folder_name_is_an_input_error_naming_it(tmp_path: Path, name: str) -> None:
    signer_folders(tmp_path, {"alice": "A", name: "B"})
    with pytest.raises(InputError, match="is not a valid signer name") as info:
        load_photo_folder(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / name}: {name!r}")


def test_letter_folders_beside_signer_folders_is_an_input_error(tmp_path: Path) -> None:
    signer_folders(tmp_path, {"alice": "AB"})
    (tmp_path / "C").mkdir()
    (tmp_path / "C" / "c.jpg").write_bytes(small_photo(0))
    with pytest.raises(InputError, match=r"mixes letter folders \(C\) with signer folders .*\(alice\); use one layout"):
        load_photo_folder(tmp_path)


def test_manifest_loads_signers_and_ignores_other_columns(tmp_path: Path) -> None:
    loaded = load_photo_folder(with_manifest(tmp_path))
    assert loaded.layout == "manifest" and loaded.named_signers == ("alice", "bob", "carol")
    assert [(p.relative_to(tmp_path).as_posix(), s) for p, s in zip(loaded.paths, loaded.signers)] == [
        ("A/a1.jpg", "alice"), ("A/b1.jpg", "bob"), ("B/a2.png", "alice"), ("C/c1.jpg", "carol")]
    assert loaded.labels.tolist() == [0, 0, 1, 2]
    # The signer is part of the content: the same photos credited to someone else are other data.
    again = with_manifest(tmp_path / "again", [(p, letter.lower(), "dave" if signer == "bob" else signer)
                                               for p, letter, signer in MANIFEST_ROWS])
    other = load_photo_folder(again)
    assert other.file_hashes == loaded.file_hashes and other.content_hash != loaded.content_hash


def test_photos_the_manifest_does_not_list_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with_manifest(tmp_path, MANIFEST_ROWS[:2], photos=[row[0] for row in MANIFEST_ROWS])
    with caplog.at_level(logging.WARNING, logger="asl_mlops.data.photos"):
        assert len(load_photo_folder(tmp_path)) == 2
    assert "skipped 2 photo(s) in the letter folders that manifest.csv does not list: B/a2.png, C/c1.jpg" in caplog.text


@pytest.mark.parametrize("row, message", [
    (("A/a1.jpg", "A", ""), r"line 3, column 'signer': empty"),
    (("A/a1.jpg", "A", "../x"), r"line 3, column 'signer': '\.\./x' is not a valid signer name"),
    (("A/a1.jpg", "A", "bad name!"), r"line 3, column 'signer': 'bad name!' is not a valid signer name"),
    (("A/a1.jpg", "J", "alice"), r"line 3, column 'letter': 'J' is not a letter A-Y without J"),
    (("B/a1.jpg", "A", "alice"), r"line 3: letter A disagrees with the letter folder of B/a1.jpg"),
    (("A/gone.jpg", "A", "alice"), r"line 3, column 'path': .*A/gone.jpg: file not found"),
    (("../A/a1.jpg", "A", "alice"), r"line 3, column 'path': '\.\./A/a1.jpg' is not a path inside"),
    (("a1.jpg", "A", "alice"), r"line 3, column 'path': a1.jpg is not in a letter folder beside manifest.csv"),
    (("A/b1.jpg", "A", "bob"), r"line 3, column 'path': A/b1.jpg is listed twice \(first on line 2\)"),
])
def test_bad_manifest_row_names_the_manifest_line_and_column(tmp_path: Path, row: tuple[str, str, str],
                                                             message: str) -> None:
    with_manifest(tmp_path, [("A/b1.jpg", "A", "bob"), row], photos=["A/a1.jpg", "A/b1.jpg", "B/a1.jpg"])
    with pytest.raises(InputError, match=message) as info:
        load_photo_folder(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'manifest.csv'}: line 3") and "\n" not in str(info.value)


def test_bad_photo_in_the_manifest_names_line_and_path(tmp_path: Path) -> None:
    with_manifest(tmp_path)
    (tmp_path / "B" / "a2.png").write_bytes(b"hello")
    bad = tmp_path / "B" / "a2.png"
    with pytest.raises(InputError, match=rf"manifest.csv: line 4, column 'path': {bad}: not a PNG or JPEG image"):
        load_photo_folder(tmp_path)


@pytest.mark.parametrize("header, message", [
    ("path,letter\n", "line 1 \\(header\\): missing column 'signer'; expected at least path,letter,signer"),
    ("path,signer,label\n", "line 1 \\(header\\): missing column 'letter'"),
    ("", "file is empty"),
    ("path,letter,signer\n", "header only, no photos listed"),
])
def test_manifest_without_its_columns_or_rows(folder: Path, header: str, message: str) -> None:
    (folder / "manifest.csv").write_text(header)
    with pytest.raises(InputError, match=message) as info:
        load_photo_folder(folder)
    assert str(info.value).startswith(f"{folder / 'manifest.csv'}: ")


@pytest.mark.skipif(not (REAL_HANDS / "manifest.csv").is_file(), reason=f"no real hand photos at {REAL_HANDS}")
def test_the_shared_hands_set_loads_with_its_signers() -> None:
    loaded = load_photo_folder(REAL_HANDS)
    assert loaded.layout == "manifest" and len(loaded) == 7202 and len(loaded.named_signers) == 28
    assert "massey-hand1" in loaded.named_signers and "" not in loaded.signers


# --- decoding --------------------------------------------------------------------------------------


def test_decode_rgb_png_and_jpeg_keep_colour_order() -> None:
    red = np.zeros((8, 6, 3), dtype=np.uint8)
    red[..., 0] = 255
    png = decode_rgb(encoded(red, ".png"))
    assert png.shape == (8, 6, 3) and png.dtype == np.uint8
    np.testing.assert_array_equal(png, red)
    jpeg = decode_rgb(encoded(red, ".jpg"))
    assert jpeg.shape == (8, 6, 3) and jpeg[..., 0].min() > 200 and jpeg[..., 1:].max() < 60


def test_decode_rgb_gray_becomes_three_channels() -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    rgb = decode_rgb(encoded(gray, ".png"))
    assert rgb.shape == (4, 5, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_decode_rgb_applies_exif_orientation_like_a_browser() -> None:
    wide = np.zeros((10, 20, 3), dtype=np.uint8)
    wide[:, :10] = 255  # left half white
    jpeg = encoded(wide, ".jpg")
    # An APP1 Exif segment with Orientation (tag 0x0112) = 6: "rotate 90 degrees clockwise to display", as phones write.
    exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0"
    rotated = decode_rgb(jpeg[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + jpeg[2:])
    assert decode_rgb(jpeg).shape == (10, 20, 3) and rotated.shape == (20, 10, 3)
    assert rotated[:8].min() > 200 and rotated[12:].max() < 60  # the left half is now on top


def test_decode_rgb_refuses_huge_declared_size_and_junk() -> None:
    data = bytearray(encoded(np.zeros((2, 2), dtype=np.uint8)))
    data[16:24] = (5000).to_bytes(4, "big") * 2  # IHDR width and height: a decompression bomb's header
    assert 5000 * 5000 > MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="more than the limit"):
        decode_rgb(bytes(data))
    with pytest.raises(ValueError, match="not a PNG or JPEG image"):
        decode_rgb(b"GIF89a")


# --- writing and download layout -------------------------------------------------------------------


def test_synthetic_photos_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = write_synthetic_photos(tmp_path / "a", per_letter=1, seed=5, size=24)
    b = write_synthetic_photos(tmp_path / "b", per_letter=1, seed=5, size=24)
    c = write_synthetic_photos(tmp_path / "c", per_letter=1, seed=6, size=24)
    assert (a / "README.txt").is_file() and len(list((a / "nothing").iterdir())) == 2
    assert load_photo_folder(a).content_hash == load_photo_folder(b).content_hash != load_photo_folder(c).content_hash
    assert read_rgb(a / "Y" / "Y0.jpg").ndim == 3


def fake_asl_alphabet(root: Path) -> Path:
    """Kaggle grassknoted/asl-alphabet: asl_alphabet_train/asl_alphabet_train/<A..Z, del, nothing, space>/."""
    train = root / "asl_alphabet_train" / "asl_alphabet_train"
    for name in ("A", "B", "J", "Z", "del", "nothing", "space"):
        (train / name).mkdir(parents=True)
        (train / name / f"{name}1.jpg").write_bytes(small_photo(len(name)))
    (root / "asl_alphabet_test" / "asl_alphabet_test").mkdir(parents=True)
    (root / "asl_alphabet_test" / "asl_alphabet_test" / "A_test.jpg").write_bytes(small_photo(9))
    return root


def fake_massey(root: Path, nested: bool) -> Path:
    """Kaggle ayuraj/asl-dataset: asl_dataset/<0-9, a-z>/, sometimes with a second copy in asl_dataset/asl_dataset/."""
    tops = [root / "asl_dataset"] + ([root / "asl_dataset" / "asl_dataset"] if nested else [])
    for top in tops:
        for name in ("0", "a", "b", "j", "y", "z"):
            (top / name).mkdir(parents=True)
            (top / name / f"hand1_{name}_bot_seg_1_cropped.jpeg").write_bytes(small_photo(ord(name)))
    return root


@pytest.mark.parametrize("make, letters", [
    (fake_asl_alphabet, ["A", "B"]),
    (lambda root: fake_massey(root, nested=False), ["A", "B", "Y"]),
    (lambda root: fake_massey(root, nested=True), ["A", "B", "Y"]),
])
def test_layout_letter_folders_of_kaggle_trees(tmp_path: Path, make, letters: list[str]) -> None:
    source = make(tmp_path / "kaggle")
    dest = layout_letter_folders(source, tmp_path / "data" / "set")
    assert sorted(p.name for p in dest.iterdir()) == letters
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["set"]  # no temp folder left
    loaded = load_photo_folder(dest)
    assert [LETTERS[LABELS.index(label)] for label in loaded.labels.tolist()] == letters
    assert loaded.skipped_folders == {}


def test_layout_replaces_an_earlier_copy_and_a_failure_leaves_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "data" / "massey"
    layout_letter_folders(fake_massey(tmp_path / "one", nested=False), dest)
    (dest / "A" / "stale.jpg").write_bytes(small_photo(0))
    layout_letter_folders(fake_massey(tmp_path / "two", nested=False), dest)
    assert not (dest / "A" / "stale.jpg").exists()

    def broken(src: str, dst: str) -> str:
        raise OSError("disk full")
    monkeypatch.setattr(photo_download, "_link_or_copy", broken)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(OSError, match="disk full"):
        layout_letter_folders(fake_massey(tmp_path / "three", nested=False), dest)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["massey"]


def test_layout_of_a_tree_without_letters_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "digits" / "0").mkdir(parents=True)
    with pytest.raises(InputError, match="no letter folders"):
        layout_letter_folders(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network on any machine (HTTPS through a closed local port), bogus Kaggle credentials, empty HOME."""
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "nobody")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub-cache"))


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("past_probe", [False, True])
def test_download_without_network_is_a_one_line_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            past_probe: bool) -> None:
    if past_probe:  # kagglehub itself meets the dead network
        monkeypatch.setattr("requests.head", lambda *args, **kwargs: None)
    with pytest.raises(InputError) as info:
        photo_download.download("massey", tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message and "ayuraj/asl-dataset" in message
    assert ("kagglehub failed" if past_probe else "cannot reach") in message
    for hint in ("KAGGLE_USERNAME", "KAGGLE_KEY", "your own photo folder"):
        assert hint in message
    assert not (tmp_path / "data").exists()


def test_download_of_an_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown dataset 'mnist'; choose one of sign-mnist, asl-alphabet, massey"):
        photo_download.download("mnist", tmp_path)


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_synth_photos_then_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["data", "synth-photos", "--out", str(tmp_path / "p"), "--per-letter", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["data", "validate", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    content_hash = load_photo_folder(tmp_path / "p").content_hash
    assert (f"{tmp_path / 'p'}: ok, 24 photos, letters ABCDEFGHIKLMNOPQRSTUVWXY, skipped folders {{'nothing': 2}}, "
            f"content sha256 {content_hash}") in result.output


def test_cli_validate_bad_folder_is_one_line_and_exit_2(folder: Path) -> None:
    bad = folder / "Q" / "broken.jpg"
    bad.write_text("not a photo")
    result = CliRunner().invoke(main, ["data", "validate", str(folder)])
    assert result.exit_code == 2
    assert f"error: {bad}: not a PNG or JPEG image\n" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("layout", ["manifest", "signers"])
def test_cli_validate_says_how_many_signers(tmp_path: Path, layout: str) -> None:
    root = with_manifest(tmp_path) if layout == "manifest" else signer_folders(tmp_path, {"al": "AB", "bo": "C"})
    result = CliRunner().invoke(main, ["data", "validate", str(root)])
    assert result.exit_code == 0, result.output
    where = "manifest.csv" if layout == "manifest" else "signer folders"
    count = 3 if layout == "manifest" else 2
    photos = len(load_photo_folder(root))
    assert f"{root}: ok, {photos} photos of {count} signers ({where}), letters ABC," in result.output


@pytest.mark.usefixtures("offline")
def test_cli_download_photo_set_offline_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["data", "download", "--dataset", "asl-alphabet", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.output.startswith("error: cannot download Kaggle dataset grassknoted")
