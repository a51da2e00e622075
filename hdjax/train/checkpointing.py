"""Training checkpoints: orbax `CheckpointManager` over ``WORKDIR/checkpoints``.

Each checkpoint holds the `TrainState` (step, params, optimiser state) and a JSON entry with
the stage and the grain iterator state, so a resumed run reads exactly the batches the
uninterrupted one would have. Saves are asynchronous (the next steps run while it writes)
and orbax commits a step only once it is completely written (a temporary folder renamed at
the end), so a crash or a full disk mid-save leaves the previous checkpoint intact; a failed
write surfaces as one `HdjaxError` at the next save or at `close`, and the leftover temporary
folder is cleared when the directory is opened again. The newest ``train.keep_checkpoints``
are kept (the best by eval is kept apart, by the eval job: `hdjax.eval.job`).
"""

from __future__ import annotations

import base64
import contextlib
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from hdjax.errors import HdjaxError


class Manager:
    """Save and restore training state plus data-iterator state, by step."""

    def __init__(self, directory: str, train_cfg: ml_collections.ConfigDict):
        self.directory = os.path.abspath(directory) if "://" not in directory else directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=train_cfg.keep_checkpoints,
            create=True,
            enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest completely written step, or None."""
        return self._manager.latest_step()

    def latest(self) -> tuple[int, int] | None:
        """(step, stage index in the schedule) of the newest checkpoint, or None."""
        step = self.latest_step()
        if step is None:
            return None
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return step, meta["meta"]["stage"]

    def save(self, step: int, state: Any, data_state: bytes, stage: int) -> None:
        """Starts writing ``state`` and the iterator state as checkpoint ``step``."""
        meta = {"stage": stage, "data": base64.b64encode(data_state).decode("ascii")}
        with self._write_errors():  # a failed earlier (async) save surfaces here
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
            )

    @contextlib.contextmanager
    def _write_errors(self):
        """Turns orbax's write failures (disk full, quota, permissions) into one line that
        names the checkpoint that is still intact."""
        try:
            yield
        except (OSError, ValueError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if len(reason) > 160:  # tensorstore's messages end with the OS error itself
                reason = reason.rsplit(": ", 1)[-1]
            kept = self._manager.latest_step()
            kept = f"step {kept} is intact" if kept is not None else "no checkpoint was written"
            raise HdjaxError(
                f"could not write a checkpoint ({reason}); {kept}", self.directory
            ) from None

    def restore(self, step: int, like: Any) -> tuple[Any, bytes]:
        """Checkpoint ``step`` laid out (shapes, dtypes, shardings) as ``like``.

        Raises:
          HdjaxError: the checkpoint does not fit ``like`` (another architecture or stage).
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        try:
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HdjaxError(
                f"checkpoint {step} does not match this config's model ({first})",
                self.directory,
            ) from None
        return out["state"], base64.b64decode(out["meta"]["data"])

    def all_steps(self) -> list[int]:
        """Every completely written step, ascending, as on disk now (the eval job's watch mode
        polls for the steps another process writes; orbax's own list is a cached one)."""
        return sorted(self._manager.all_steps(read=True))

    def restore_params(self, step: int) -> Any:
        """Only the parameters of checkpoint ``step`` (numpy arrays), for evaluation."""
        out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        state = out["state"]
        params = state["params"] if isinstance(state, dict) else state.params
        return jax.tree_util.tree_map(np.asarray, params)

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        try:
            with self._write_errors():
                self._manager.wait_until_finished()
        finally:
            self._manager.close()
