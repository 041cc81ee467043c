"""Bring your own data: readers, validators and writers of the field's data formats.

Every reader returns a :class:`SampleView` of :class:`LazySample` objects: the toolkit's
:class:`~dmole_lab.data.tasks.Sample` (task, image, question, answer, meta) whose image is
decoded from disk only when ``sample.image`` is read. Every ``check_*`` function returns a
:class:`Report` with all problems (file, record index, id, field) and counts instead of
raising; the readers raise :class:`DataFormatError` with that report when ``strict``.
Layouts and record shapes: docs/data.md.
"""

from .bench import (
    MME_COGNITION,
    MME_PERCEPTION,
    POPE_SPLITS,
    check_mme,
    check_mmmu,
    check_pope,
    mme_category,
    mmmu_prompt,
    parse_options,
    read_mme,
    read_mmmu,
    read_pope,
    write_mme,
    write_mmmu,
    write_pope,
)
from .coin import answer_of, check_coin, parse_bbox, read_coin, write_coin
from .core import (
    DataFormatError,
    LazySample,
    Levelled,
    Problem,
    Report,
    SampleView,
    iter_records,
    load_image,
    save_png,
)
from .llava import (
    MetaEntry,
    chat_messages,
    check_llava,
    check_meta,
    llava_records,
    read_llava,
    read_meta,
    read_meta_tasks,
    render_history,
    write_llava,
    write_meta,
    write_meta_tasks,
)

__all__ = [
    "MME_COGNITION", "MME_PERCEPTION", "POPE_SPLITS", "DataFormatError", "LazySample",
    "Levelled", "MetaEntry", "Problem", "Report", "SampleView", "answer_of", "chat_messages",
    "check_coin",
    "check_llava", "check_meta", "check_mme", "check_mmmu", "check_pope", "iter_records",
    "llava_records", "load_image", "mme_category", "mmmu_prompt", "parse_bbox",
    "parse_options", "read_coin", "read_llava", "read_meta", "read_meta_tasks", "read_mme",
    "read_mmmu", "read_pope", "render_history", "save_png", "write_coin", "write_llava",
    "write_meta", "write_meta_tasks", "write_mme", "write_mmmu", "write_pope",
]
