"""The PIFuHD config, kept in the package (hdjax/configs/pifuhd.py) so that an installed copy
has it too; this file keeps `--config=configs/pifuhd.py` and `from configs.pifuhd import
get_config` working from the repository root."""

from hdjax.configs.pifuhd import *  # noqa: F403
from hdjax.configs.pifuhd import get_config  # noqa: F401
