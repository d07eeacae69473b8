"""The worker process (design §3, issue 14 item 2): everything of the bridge but the MQTT intake.

Owns: this child's life around a `Service` built with `remote_intake`: the processor (which finds the receiver
process's raw segments on disk), the image stage, the flusher, receipts, the ledger, and the health server with
/metrics and the status page (which count the receiver's numbers from its reports). Messages from the supervisor:
LOGGED and HELLO wake the processor, REPORT is the receiver's state, STOP starts the ordered shutdown with the grace
it gives (the supervisor stopped the receiver first), and the supervisor gone stops it the same way.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.service import Service
from mqtt_bridge.supervise.exits import run_or_exit_code
from mqtt_bridge.supervise.link import HELLO, LOGGED, REPORT, RESTARTS, STOP, ChildLink, Message

__all__ = ["run_worker"]

def run_worker(config: BridgeConfig, conn: Connection) -> int:
    """The worker process's body; returns its exit code (0 clean, 1 fatal, 3 port taken, 4 buffer unusable)."""
    service = Service(config, remote_intake=True)
    grace: list[float] = []

    def on_message(message: Message) -> None:
        kind = message[0]
        if kind == LOGGED:
            service.raw_logged()
        elif kind == HELLO:
            service.raw_logged(int(str(message[1])))
        elif kind == REPORT and service.remote is not None and isinstance(message[1], dict):
            service.remote.update(message[1])
        elif kind == RESTARTS and isinstance(message[1], dict):
            service.stats.absorb("supervisor", {("process_restarts", str(role)): int(count)
                                                for role, count in message[1].items()}, {})
        elif kind == STOP:
            grace.append(float(str(message[1])))
            service.stop_event.set()

    link = ChildLink(conn, on_message, service.stop_event.set)
    link.start()

    def serve() -> int:
        service.start()
        try:
            service.wait()
        finally:
            code = service.shutdown(grace[-1] if grace else None)
        return code

    try:
        return run_or_exit_code(serve, config.health.port)
    finally:
        link.close()
