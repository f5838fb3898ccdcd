"""Errors a user can act on. Nodes let these through unchanged so ComfyUI shows the message as written."""


class AnimeVideoInputError(ValueError):
    """Bad input: the message names the input and what is allowed."""


class AnimeVideoModelError(RuntimeError):
    """A model file that is missing, unreadable, or of the wrong architecture."""


class AnimeVideoMemoryError(AnimeVideoInputError):
    """A run that would not fit in memory, refused before it starts: the message names the size and what to change
    (an input error: the request is too large, nothing is wrong with the model or the machine)."""


class AnimeVideoDependencyError(AnimeVideoModelError):
    """A package the capability needs is missing or older than it needs: the message names the package, the
    version found and the version needed."""
