"""requirements.txt's lines, read from each distribution's metadata headers alone: the same
as importlib.metadata's own `metadata['Name']` and `version`, which parse the whole file."""

import email
import random
from importlib.metadata import PathDistribution, distributions

from tfblackbox.recorder.system import files


def test_requirements_equal_importlib_metadata_for_every_installed_distribution():
    expected = []
    for d in distributions():
        try:
            expected.append(f"{d.metadata['Name']}=={d.version}\n")
        except (KeyError, UnicodeDecodeError, TypeError):
            pass
    assert len(expected) > 50   # this venv: TensorFlow, wandb, pyarrow and their own
    assert files.requirements() == "".join(expected).encode()


def test_metadata_with_crlf_a_long_description_and_folded_headers(tmp_path):
    info = tmp_path / "odd_pkg-1.2.dist-info"
    info.mkdir()
    body = "Name: not-this\r\nVersion: 0\r\n" + "a long description line\r\n" * 5000
    (info / "METADATA").write_bytes(
        ("Metadata-Version: 2.1\r\nName: odd-pkg\r\nSummary: one\r\n  folded on\r\n"
         "Version: 1.2\r\n\r\n" + body).encode())
    assert files.name_version(PathDistribution(info)) == ("odd-pkg", "1.2")


def random_texts(seed, parts, n=20000):
    """Texts of 0-8 lines drawn from `parts`, each ended by \\n, \\r\\n or \\r, some without
    an ending at the very end of the file."""
    rng = random.Random(seed)
    for _ in range(n):
        lines = [rng.choice(parts) for _ in range(rng.randint(0, 8))]
        text = "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lines)
        if text and rng.random() < 0.3:
            text = text[:-1]
        yield text


def test_header_end_matches_email_parser_on_every_kind_of_line_ending():
    """Random header and body lines with \\n, \\r\\n and \\r endings, empty lines anywhere
    (the first one ends the headers, also as the very first line): the cut headers give the
    same Name, Version and folded Summary as the whole text does."""
    parts = ["Name: pkg", "Version: 1.0", "Summary: x", " folded", "\tfolded too", "",
             "Name: late", "Version: 9", "not a header", "Description: d"]
    for text in random_texts(7, parts):
        whole = email.message_from_string(text)
        end = files._HEADERS_END.search(text)
        cut = email.message_from_string(text if end is None else text[:end.end()])
        for header in ("Name", "Version", "Summary"):
            assert cut.get_all(header) == whole.get_all(header), (text, header)


def test_header_scan_gives_what_email_gives_or_leaves_it_to_email():
    """The scan of the first header lines, on random texts: where it answers, Name and Version
    are email's get() of the whole text; it answers for the plain ones."""
    parts = ["Name: pkg", "name:pkg2", "NAME: p3  ", "Version: 1.0", "version:\t2",
             "Name: pk\u00e9", "Summary: x", " folded", "\tfolded too", "", "From me", ":no name",
             "not a header", "Metadata-Version: 2.1", "Name : spaced", "Version: 3 \x0b", "X-Y: z"]
    answered = 0
    for text in random_texts(11, parts):
        scanned = files._scan_name_version(text)
        if scanned is not None:
            whole = email.message_from_string(text)
            assert scanned == (whole.get("Name"), whole.get("Version")), text
            answered += 1
    assert answered > 1000


def test_header_scan_answers_for_the_installed_distributions():
    """What makes requirements.txt cheap: every installed distribution's headers are plain."""
    texts = [d.read_text("METADATA") or d.read_text("PKG-INFO") for d in distributions()]
    texts = [t for t in texts if t]
    assert len(texts) > 50
    assert sum(files._scan_name_version(t) is not None for t in texts) >= 0.95 * len(texts)
