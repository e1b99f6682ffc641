"""Close-match hints for names a model does not have (labels of a label file or of reference events)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

#: Unknown names spelled out with their hints; a longer list is counted, not printed (521 class names would be 10 KB).
MAX_SHOWN = 5


def unknown_names_hint(unknown: Sequence[str], known: Sequence[str]) -> str:
    """``'Dgo' (did you mean 'Dog'?), 'X'`` for the first :data:`MAX_SHOWN` unknown names, ``and N more`` after.

    Parameters
    ----------
    unknown : sequence of str
        Names that are not in ``known``, in the order to show them.
    known : sequence of str
        The model's class names, searched with :func:`difflib.get_close_matches` (two at most per name).
    """
    hints = []
    for name in unknown[:MAX_SHOWN]:
        close = difflib.get_close_matches(name, known, n=2)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    more = f" and {len(unknown) - MAX_SHOWN} more" if len(unknown) > MAX_SHOWN else ""
    return ", ".join(hints) + more
