"""A download task re-checked where it is used: its fields come off a topic anyone with write
access (or an edited dead letter that was replayed) could have set.

The download stage calls :func:`check_task` before touching storage; a task that fails is a
``validation`` failure and goes to the DLQ.
"""

from __future__ import annotations

from kafkapipe import paths
from kafkapipe.errors import ValidationError
from kafkapipe.messages import DownloadTask, make_task_id


def check_task(task: DownloadTask) -> None:
    """ValidationError unless ``task_id`` and ``blob_path`` are what the task's fields derive.

    ``task_id`` keys the inventory row: one not derived from ``trace_id`` and the URL would let a
    forged task write (or be answered from) another task's row.
    """
    if task.task_id != make_task_id(task.trace_id, task.attachment_url):
        raise ValidationError(
            f"task_id refused: {task.task_id[:64]!a} is not the id the task's trace_id and URL give"
        )
    path = task.blob_path
    if not paths.is_valid(path):
        raise ValidationError(
            f"blob_path refused: not a relative path of [A-Za-z0-9._/-] segments within "
            f"{paths.MAX_PATH} bytes without '..' ({path[:200]!a})"
        )
    try:
        expected = paths.blob_path(
            task.task_id, task.trace_id, task.attachment_url, task.source_system, task.original_timestamp
        )
    except ValueError as exc:
        raise ValidationError(f"blob_path refused: the task's fields give no valid path ({exc})") from None
    if path != expected:
        raise ValidationError(f"blob_path refused: {path[:200]!a} is not the path the task's fields give")
