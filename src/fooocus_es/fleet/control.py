"""Stop and skip across machines: core NATS request/reply on `fes.ctl.<task_id>` (fleet.md §2).

Every runner process listens on `fes.ctl.*` and answers only for the task it runs, so the API
node needs no owner lookup: a reply means the runner got it, silence (a timeout or no responders)
means nobody runs that task now. At-most-once is enough: the command is asked again by the client,
and a cancel of a pending task is decided in the log, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from fooocus_es.fleet.connection import NatsThread
from fooocus_es.tasks.commands import COMMAND_DECODER, COMMAND_ENCODER, Control, Skip, Stop

PREFIX: Final = "fes.ctl"
ANSWER_S: Final = 2.0


class NatsControl:
    """The API side: hand a Stop or Skip to whichever runner holds the task."""

    def __init__(self, nats: NatsThread, prefix: str = PREFIX) -> None:
        self.nats = nats
        self.prefix = prefix

    async def send(self, command: Control) -> bool:
        """From the app's event loop; True when the runner holding the task took it."""
        return await self.nats.run(self._request(command))

    async def _request(self, command: Control) -> bool:
        try:
            reply = await self.nats.nc.request(
                f"{self.prefix}.{command.task_id}", COMMAND_ENCODER.encode(command), timeout=ANSWER_S
            )
        except (NatsTimeout, NoRespondersError):
            return False
        return reply.data == b"ok"


class ControlListener:
    """The runner side: `deliver` is Runner.deliver (True when this process runs the task)."""

    def __init__(self, nats: NatsThread, deliver: Callable[[Control], bool], prefix: str = PREFIX) -> None:
        self.nats = nats
        self.deliver = deliver
        self.prefix = prefix
        self._sub: Subscription | None = None

    def start(self) -> None:
        self._sub = self.nats.call(self.nats.nc.subscribe(f"{self.prefix}.*", cb=self._on_message))

    async def _on_message(self, msg: Msg) -> None:
        try:
            command = COMMAND_DECODER.decode(msg.data)
        except ValueError:
            return
        if isinstance(command, Stop | Skip) and self.deliver(command):
            await msg.respond(b"ok")  # only the holder answers: the others stay silent

    def stop(self) -> None:
        if self._sub is not None and not self.nats.closed:
            self.nats.call(self._sub.unsubscribe())
