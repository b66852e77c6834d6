"""Reading CSV files as users save them (UTF-8, Excel's Windows-1252 and UTF-16 exports)."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_medml.errors import InputError

__all__ = ["read_csv_rows"]


def read_csv_rows(path: str | Path, what: str, *, delimiter: str | None = None) -> list[list[str]]:
    """The rows of a CSV file as text cells, as written (blank rows kept).

    Reads UTF-8 (with or without BOM), Excel's plain "CSV" export (Windows-1252: an accented
    header breaks UTF-8) and Excel's "Unicode text" (UTF-16, tab-separated). Hand-written
    because the csv module does not guess encodings, and pandas is not a core dependency.

    ``delimiter`` None: a comma, unless the text has none and has tabs (Excel's "Unicode
    text", .tsv) or semicolons (Excel's CSV where the decimal mark is a comma).

    Raises
    ------
    InputError
        Naming ``what`` (e.g. ``"class file"``) when the file cannot be read, is not CSV,
        or is in none of those encodings.
    """
    path = Path(path)
    try:
        utf16 = path.open("rb").read(2) in (b"\xff\xfe", b"\xfe\xff")
    except OSError as exc:
        raise InputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    for encoding in ("utf-16",) if utf16 else ("utf-8-sig", "cp1252"):
        try:
            with path.open(newline="", encoding=encoding) as fh:
                text = fh.read()
            return list(csv.reader(text.splitlines(), delimiter=delimiter or _delimiter(text)))
        except UnicodeDecodeError:
            continue
        except OSError as exc:
            raise InputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
        except csv.Error as exc:
            raise InputError(f"{what} '{path}' is not a CSV table ({exc}): save it as CSV") from exc
    raise InputError(f"{what} '{path}' is neither UTF-8 nor Windows-1252 text: save it as 'CSV UTF-8' (Excel) "
                     "or plain text")


def _delimiter(text: str) -> str:
    if "," in text:
        return ","
    return "\t" if "\t" in text else ";" if ";" in text else ","
