"""icefall's `params`: a dict whose keys are also attributes, and its frozen form for a set-up run."""
from typing import Any


class AttributeDict(dict):
    """A dict whose keys can also be read and written as attributes (icefall's `params`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None


class FrozenAttributeDict(AttributeDict):
    """An AttributeDict that refuses changes: the configuration of a run once it is set up."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("the run's configuration is frozen once set up; loop state lives in TrainingState")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _refuse
    update = setdefault = pop = popitem = clear = _refuse

    def __deepcopy__(self, memo: dict) -> "FrozenAttributeDict":
        return self

    def __reduce__(self) -> tuple:
        # Pickling (data-loader workers, mp.spawn) would otherwise rebuild it item by item.
        return (FrozenAttributeDict, (dict(self),))
