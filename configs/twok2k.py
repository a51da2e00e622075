"""The 2K2K config, kept in the package (hdjax/configs/twok2k.py); this file keeps
`--config=configs/twok2k.py` working from the repository root."""

from hdjax.configs.twok2k import *  # noqa: F403
from hdjax.configs.twok2k import get_config  # noqa: F401
