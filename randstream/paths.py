"""Where the app's files are: the page's assets, and the database when --db names none.

In a checkout, templates/ and static/ sit at the repository's root and the database in
Flask's instance/ folder beside random_stream.py. An installed app (`pip install .`, pipx)
carries templates/ and static/ inside this package, and keeps its database outside the
environment, where a reinstall cannot delete it: $XDG_DATA_HOME/random-stream/
(by default ~/.local/share/random-stream/).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError

PACKAGE = Path(__file__).resolve().parent
# The wheel puts templates/ and static/ into the package; a checkout has them beside it.
INSTALLED = (PACKAGE / "static").is_dir()
ASSETS = PACKAGE if INSTALLED else PACKAGE.parent  # Flask's root_path: templates/, static/
DB_NAME = "random_stream.sqlite3"


def data_home() -> Path:
    """The installed app's folder for its data (the XDG Base Directory rule)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):  # unset, empty or relative: the spec says ignore it
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "random-stream"


def default_db(instance_path: str) -> str:
    """The SQLite file when --db names none; its folder is created."""
    folder = data_home() if INSTALLED else Path(instance_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder} for the database ({exc.strerror}): "
                          "pass --db PATH") from None
    return str(folder / DB_NAME)
