"""The one error type for a bad request image; the HTTP layer maps it to 400 naming the field."""

from __future__ import annotations


class InputImageError(ValueError):
    """An image field that could not be turned into a usable image.

    ``field`` is the request field as a client would write it, e.g. ``uov_input_image`` or
    ``controlnet_image[0].cn_img``; ``message`` says what was wrong, without echoing the payload.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    # The HTTP status it answers: a bad image is the client's 400; the budgets below say otherwise.
    status_code = 400

    def __reduce__(self) -> tuple[type[InputImageError], tuple[str, str]]:
        # Keep the two-argument constructor picklable (errors may cross process/thread pools).
        return (type(self), (self.field, self.message))


class ImageBudgetExceeded(InputImageError):
    """The request's images together hold more pixels than one request may decode (413)."""

    status_code = 413


class DecodersBusy(InputImageError):
    """Every decode slot stayed taken by other requests for the whole wait (429, retry later)."""

    status_code = 429
