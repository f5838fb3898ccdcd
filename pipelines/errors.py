"""Errors a user can act on. Nodes let these through unchanged so ComfyUI shows the message as written."""


class AnimeVideoInputError(ValueError):
    """Bad input: the message names the input and what is allowed."""


class AnimeVideoModelError(RuntimeError):
    """A model file that is missing, unreadable, or of the wrong architecture."""
