"""Where the tests find the real raw task files: `$HYPERFORMER_SHARED_DATA`, else `../shared/data` beside the checkout.
This machine's layout lives here, not in the library (which takes the folder as `data_dir`)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    "The folder of real raw task files (`$HYPERFORMER_SHARED_DATA`, else `<repo>/../shared/data`), or None when absent."
    env = os.environ.get("HYPERFORMER_SHARED_DATA")
    folder = Path(env) if env else REPO.parent / "shared" / "data"
    return folder if (folder / "PROVENANCE.md").exists() else None
