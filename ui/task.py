"""The background task that runs the engine while QGIS stays responsive.

QGIS deletes a finished task's C++ object, and silently never runs a task whose Python wrapper
was garbage-collected. So each task keeps itself alive in `_ALIVE` from creation until
`finished()`, even when the plugin that started it has been unloaded meanwhile, and it hands its
outcome over as a plain Python object instead of being queried afterwards.
"""
import os
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .i18n import tr

LOG_TAG = "SAR Cloud Removal"
_ALIVE = set()


@dataclass
class RunOutcome:
    """What the main thread needs once a run is over: exactly one of the three is set."""
    result: object = None         # core.engine.RemovalResult
    error: Optional[str] = None   # the UserError sentence, or a pointer to the log
    cancelled: bool = False


class RemovalTask(QgsTask):
    """Runs the faces' entry point (`adaptation.remove_clouds`: scene adaptation when asked,
    then the engine) on a pool thread; reports through Qt signals only."""

    status_changed = pyqtSignal(str)

    def __init__(self, request, on_done: Callable[[RunOutcome], None]):
        super().__init__(tr("Removing clouds from {}").format(os.path.basename(request.s2_path)),
                         QgsTask.CanCancel)
        self._request = request
        self._on_done = on_done
        # What a task cancelled while still queued reports: run() never executes then.
        self._outcome = RunOutcome(cancelled=True)
        _ALIVE.add(self)

    def detach(self) -> None:
        """Forget the receiver (the plugin is unloading); the task still ends normally."""
        self._on_done = None

    def run(self) -> bool:
        from ..adaptation import remove_clouds
        from ..core.errors import Cancelled, UserError

        try:
            result = remove_clouds(self._request, self._report, self.isCanceled)
        except Cancelled:
            self._outcome = RunOutcome(cancelled=True)
            return False
        except UserError as error:
            self._outcome = RunOutcome(error=str(error))
            return False
        except Exception:  # a bug, not bad input: keep the traceback for the report
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            self._outcome = RunOutcome(error=tr(
                "The run failed unexpectedly; the details are in the 'SAR Cloud Removal' tab "
                "of the Log Messages panel."))
            return False
        self._outcome = RunOutcome(result=result)
        return True

    def _report(self, fraction: float, message: str) -> None:
        self.setProgress(100.0 * max(0.0, min(1.0, fraction)))
        self.status_changed.emit(message)

    def finished(self, ok: bool) -> None:  # main thread
        _ALIVE.discard(self)
        if self._on_done is not None:
            self._on_done(self._outcome)
